"""An uploaded image for ``POST /why``: the body parsed, the picture's size checked from its header, then decoded
within a memory budget.

Memory per request is bounded before any pixel is allocated: :func:`read_header` opens the PNG/JPEG lazily (PIL
reads the header only; nothing is decoded before ``load()``) and :func:`check_limits` refuses, with 413, an image
over ``max_pixels``, ``max_side`` or ``max_decode_bytes`` — the bytes the decoded picture takes in PIL's memory
(width × height × bytes per pixel of its mode: 1 for grey or palette, 2 for 16-bit grey, 4 for RGB(A), CMYK or
32-bit). :func:`decode_upload` then converts the picture to grey strip by strip, so the conversion adds at most
about 2 bytes per pixel beside the decoded picture (``data.images.to_gray`` on a whole 16-bit picture makes
float64 copies: 16+ bytes per pixel). The result is bit-identical to ``why``'s ``image_to_tensor(open_image(…))``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser

import numpy as np
import torch
from PIL import Image

from sae_lab.data.images import image_to_tensor, to_gray

MAX_BYTES = 10 * 1024 * 1024
"""Largest request body (10 MiB)."""
MAX_PIXELS = 16_000_000
"""Largest image (width × height) the server decodes; a TU-Berlin sketch is 1111² ≈ 1.2 M."""
MAX_SIDE = 8192
"""Largest image width or height."""
MAX_DECODE_BYTES = 64 * 1024 * 1024
"""Largest decoded picture in memory (64 MiB: a 16 Mpx RGB photo, or a 16-bit 4000² scan)."""
FORMATS = ("PNG", "JPEG")
"""The only decoders run on uploads (PIL's other format plugins never see untrusted bytes)."""
FILE_FIELDS = ("image", "file")
"""Multipart field names looked for first."""
USAGE = 'send one PNG/JPEG as a multipart field \'image\', as JSON {"image": "<base64>"}, or as a raw image/* body'
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""PIL's storage per pixel by mode; every other mode (RGB included: PIL pads it to 4) takes 4."""
STRIP_BYTES = 1024 * 1024
"""Temporary memory per strip of the grey conversion."""
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class RequestError(Exception):
    """A request the server refuses, with its HTTP status and a detail naming the problem."""

    def __init__(self, status: int, detail: str):
        detail = _OBJECT_REPR.sub("the upload", detail)  # never "<_io.BytesIO object at 0x…>"
        super().__init__(detail)
        self.status, self.detail = status, detail


# ------------------------------------------------------------------------------------------------ request body
def _multipart_image(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart body without a boundary parameter")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise RequestError(400, "malformed multipart body")
    parts = [p for p in msg.iter_parts() if p.get_content_disposition() == "form-data"]
    by_name = {p.get_param("name", header="content-disposition"): p for p in parts}
    part = next((by_name[n] for n in FILE_FIELDS if n in by_name), None)
    part = part or next((p for p in parts if p.get_filename()), None)
    if part is None:
        raise RequestError(400, f"the multipart upload has no file field ('image' or 'file'); {USAGE}")
    data = part.get_payload(decode=True)
    return (data if isinstance(data, bytes) else b""), part.get_filename()


def _json_image(body: bytes) -> tuple[bytes, str | None]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise RequestError(400, f"JSON body needs a string field 'image' (base64 PNG/JPEG); {USAGE}")
    text = payload["image"]
    if text.startswith("data:"):  # a data: URL
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "field 'image' is not valid base64") from None
    name = payload.get("name")
    return data, name if isinstance(name, str) else None


def extract_image(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The image bytes (and the client's name for it, if any) of a ``POST /why`` body.

    Raises:
        RequestError: 400 for an empty or malformed body, 415 for an unsupported content type.
    """
    if not body:
        raise RequestError(400, f"empty request body; {USAGE}")
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        data, name = _multipart_image(body, content_type)
    elif ctype == "application/json" or ctype.endswith("+json"):
        data, name = _json_image(body)
    elif ctype in ("", "application/octet-stream") or ctype.startswith("image/"):
        data, name = body, None
    else:
        raise RequestError(415, f"unsupported content type {ctype!r}; {USAGE}")
    if not data:
        raise RequestError(400, "the uploaded image is empty")
    return data, name


# ------------------------------------------------------------------------------------------------ size and budget
@dataclass(frozen=True)
class Limits:
    """What one upload may cost; checked from the image header, before decoding."""

    max_pixels: int = MAX_PIXELS
    """Largest width × height."""
    max_side: int = MAX_SIDE
    """Largest width or height."""
    max_decode_bytes: int = MAX_DECODE_BYTES
    """Largest decoded picture in memory, width × height × bytes per pixel of its mode."""


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an upload says, before any pixel is decoded."""

    format: str
    """PNG or JPEG."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    mode: str
    """PIL mode: L, P, I;16, RGB, RGBA, …"""

    @property
    def decoded_bytes(self) -> int:
        """Bytes the decoded picture takes in PIL's memory."""
        return self.width * self.height * BYTES_PER_PIXEL.get(self.mode, 4)


def _px(n: float) -> str:
    return f"{n / 1e6:.3g} Mpx" if n >= 1e5 else f"{int(n)} px"


def _megabytes(n: float) -> str:
    return f"{n / 2**20:.3g} MiB"


def read_header(data: bytes) -> ImageHeader:
    """Size and mode of a PNG/JPEG from its header alone.

    Raises:
        RequestError: 400 for anything that is not a PNG or JPEG, 413 for a PIL decompression-bomb refusal.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as probe:  # lazy: reads the header only
                return ImageHeader(probe.format, probe.width, probe.height, probe.mode)
    except Image.DecompressionBombError as e:
        size = re.search(r"\((\d+) pixels\)", str(e))
        raise RequestError(413, f"image is {_px(int(size[1])) if size else 'too large'}, a decompression "
                                "bomb by its header; refused before decoding") from None  # fmt: skip
    except Exception:  # PIL raises many types for bad data; none of their texts helps a client
        raise RequestError(400, f"not a PNG/JPEG image (the upload starts with {data[:8]!r}); {USAGE}") from None


def check_limits(header: ImageHeader, limits: Limits) -> None:
    """Raises RequestError 413 when decoding ``header``'s picture would exceed ``limits``."""
    w, h = header.width, header.height
    if w * h > limits.max_pixels:
        raise RequestError(413, f"image is {w}x{h} = {_px(w * h)}, over --max-pixels {_px(limits.max_pixels)}")
    if max(w, h) > limits.max_side:
        raise RequestError(413, f"image is {w}x{h}, a side over --max-side {limits.max_side}")
    if header.decoded_bytes > limits.max_decode_bytes:
        raise RequestError(
            413,
            f"image is {w}x{h} {header.mode} = {_megabytes(header.decoded_bytes)} decoded, over --max-decode-bytes "
            f"{_megabytes(limits.max_decode_bytes)}",
        )


# ------------------------------------------------------------------------------------------------ decoding
def _gray_in_strips(img: Image.Image, strip_bytes: int) -> Image.Image:
    """``to_gray(img)`` computed a strip of rows at a time: the same pixels, bounded temporaries (``np.asarray``
    of a whole picture would copy it twice)."""
    rows = max(1, strip_bytes // (8 * max(1, img.width)))  # float64 rows for the wide modes
    out = Image.new("L", img.size)  # 1 B/px, filled strip by strip
    wide = img.mode in ("I", "I;16", "I;16B", "I;16L", "F")
    if wide:  # the scale exactly as data.images.to_gray chooses it, over the whole picture (no copy)
        hi = 65535.0 if img.mode.startswith("I;16") or img.getextrema()[1] > 255 else 255.0
    for a in range(0, img.height, rows):
        part = img.crop((0, a, img.width, min(img.height, a + rows)))
        if wide:  # to_gray's float64 arithmetic, in place on the strip
            x = np.asarray(part, dtype=np.float64)
            x /= hi
            x *= 255.0
            out.paste(Image.fromarray(np.clip(x, 0, 255, out=x).astype(np.uint8), "L"), (0, a))
        else:  # to_gray is per pixel for these modes (alpha over white, then L): strips give the same pixels
            out.paste(to_gray(part), (0, a))
    return out


def decode_upload(data: bytes, image_size: int, limits: Limits = Limits(), strip_bytes: int = STRIP_BYTES
                  ) -> torch.Tensor:  # fmt: skip
    """PNG/JPEG bytes → (1, S, S) ink, the size checked from the header before any pixel is decoded.

    Raises:
        RequestError: 413 for an image over ``limits``, 400 for anything that is not a complete PNG/JPEG.
    """
    header = read_header(data)
    check_limits(header, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            img.load()
    except Exception as e:  # truncated or corrupt after a valid header
        raise RequestError(400, f"the {header.format} is truncated or corrupt: {e}") from None
    try:
        return image_to_tensor(_gray_in_strips(img, strip_bytes), image_size)
    except Exception as e:  # an exotic mode that cannot be converted
        raise RequestError(400, f"cannot convert a {img.mode} image to grey: {e}") from None
