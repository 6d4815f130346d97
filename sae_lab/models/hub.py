"""An SAE by name: a local export folder or a Hugging Face Hub repo, and the checks a folder must pass to load.

``resolve_sae_folder`` turns what a user typed into a local folder: an existing folder as is; ``owner/name`` (a
Hub repo id that is not a local path) or ``hf://owner/name[/subfolder]`` through ``huggingface_hub``'s
``snapshot_download``, which uses the local cache when the Hub cannot be reached (``HF_HUB_OFFLINE=1``, no network)
and downloads otherwise. ``check_sae_files`` reads a folder's ``cfg.json`` and tensor header (not the data) and says
exactly what is wrong with a tampered or truncated export before :meth:`TopKSAE.load_from_disk` trips on it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sae_lab.run.files import SAE_CFG, SAE_WEIGHTS

HF_PREFIX = "hf://"
"""Prefix that marks a Hub reference explicitly (and allows a subfolder: ``hf://owner/name/layer4``)."""
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]$")
"""A Hub repo id, ``owner/name`` (huggingface_hub's rules, loosely: one slash, word characters, ``.`` and ``-``)."""


def hub_reference(name: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, subfolder)`` when ``name`` means a Hub repo, else None (a local path).

    ``hf://owner/name[/sub/folder]`` always means the Hub; a bare ``owner/name`` does when no such local path exists.
    """
    text = os.fspath(name)
    if text.startswith(HF_PREFIX):
        parts = text[len(HF_PREFIX) :].strip("/").split("/")
        repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:]) or None
        if not REPO_ID.match(repo_id):
            raise ValueError(f"{text!r} is not hf://owner/name[/subfolder]")
        return repo_id, sub
    if REPO_ID.match(text) and not Path(text).exists():
        return text, None
    return None


def resolve_sae_folder(
    name: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder holding the SAE that ``name`` refers to (downloaded into the Hugging Face cache if needed).

    Args:
        name: a local folder, a Hub repo id ``owner/name``, or ``hf://owner/name[/subfolder]``.
        subfolder: folder inside the repo (or the local folder) that holds ``cfg.json``.
        revision: branch, tag or commit of the Hub repo (None: ``main``).
        cache_dir: the Hugging Face cache (None: ``HF_HUB_CACHE``).
        local_files_only: never reach the network, use the cache only (``HF_HUB_OFFLINE=1`` does the same).

    Returns:
        The folder; a local path is returned as given (its existence is the caller's check).

    Raises:
        FileNotFoundError: a Hub id that is neither cached nor downloadable; the message names it and says it needs
            a download.
    """
    ref = hub_reference(name)
    if ref is None:
        return Path(name) / subfolder if subfolder else Path(name)
    repo_id, sub = ref
    sub = "/".join(s for s in (sub, subfolder) if s) or None
    folder = _snapshot(repo_id, sub, revision, cache_dir, local_files_only)
    return folder / sub if sub else folder


def _snapshot(repo_id: str, sub: str | None, revision, cache_dir, local_files_only: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    kw = {"revision": revision, "cache_dir": cache_dir, "allow_patterns": f"{sub}/*" if sub else None}
    try:
        try:
            return Path(snapshot_download(repo_id, local_files_only=local_files_only, **kw))
        except (LocalEntryNotFoundError, RepositoryNotFoundError):
            raise
        except (OSError, HfHubHTTPError):  # a network failure snapshot_download does not fall back on itself
            return Path(snapshot_download(repo_id, local_files_only=True, **kw))
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder nor a Hugging Face Hub repo you can access ({type(e).__name__})"
        ) from None
    except LocalEntryNotFoundError:
        where = cache_dir or "the Hugging Face cache (HF_HUB_CACHE)"
        raise FileNotFoundError(
            f"SAE {repo_id!r} is not a local folder and is not in {where}: it needs a download from the Hugging "
            "Face Hub. Run once with network access (and HF_HUB_OFFLINE unset), or fetch it with "
            f"`hf download {repo_id}`, or give the path of a local export folder"
        ) from None


def sae_tensor_shapes(d_in: int, num_latents: int) -> dict[str, tuple[int, ...]]:
    """The tensors of an sae_lab SAE export and their shapes (C = ``d_in``, M = ``num_latents``)."""
    return {
        "W_enc": (num_latents, d_in),
        "b_enc": (num_latents,),
        "W_dec": (num_latents, d_in),
        "b_dec": (d_in,),
        "mu": (d_in,),
        "sigma": (d_in,),
    }


def read_sae_cfg(folder: str | os.PathLike) -> dict:
    """An SAE export's ``cfg.json`` as a dict, its recorded facts type-checked (``layer`` and ``classifier`` strings,
    ``metadata`` an object); the hyper-parameters are :func:`check_sae_files`' to check.

    Raises:
        ValueError: not JSON, not a JSON object, or a recorded fact of the wrong type (the message names the file).
    """
    cfg_path = Path(folder) / SAE_CFG
    try:
        info = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got {type(info).__name__}")
    for key, kind in (("layer", str), ("classifier", str), ("metadata", dict)):
        if info.get(key) is not None and not isinstance(info[key], kind):
            raise ValueError(f"{cfg_path}: {key!r} must be a JSON {'string' if kind is str else 'object'}, "
                             f"got {info[key]!r}")  # fmt: skip
    return info


def check_sae_files(folder: str | os.PathLike, config_cls: type) -> dict:
    """Checks that ``folder`` is a loadable sae_lab SAE export; returns its ``cfg.json`` as a dict.

    Reads the config and the safetensors header only (names, shapes, dtypes), so it is cheap on a large SAE.

    Args:
        folder: the export folder.
        config_cls: :class:`~sae_lab.models.sae.SaeConfig` (passed in: ``sae.py`` imports this module).

    Raises:
        FileNotFoundError: the folder or one of its two files is missing.
        ValueError: ``cfg.json`` is not JSON, lacks or mistypes a field, or a tensor is missing, extra, of the wrong
            shape or not floating point (the message names the file and the tensor).
    """
    from dataclasses import fields

    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder {folder} does not exist")
    missing = [f for f in (SAE_CFG, SAE_WEIGHTS) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported SAE: it lacks {', '.join(missing)}")
    cfg_path = folder / SAE_CFG
    info = read_sae_cfg(folder)
    for key in ("d_in", "num_latents", "k"):
        if key not in info:
            raise ValueError(f"{cfg_path} lacks {key!r} (an integer)")
        if not isinstance(info.get(key), int) or isinstance(info.get(key), bool):
            raise ValueError(f"{cfg_path}: {key!r} must be an integer, got {info.get(key)!r}")
    try:
        cfg = config_cls(**{f.name: info[f.name] for f in fields(config_cls) if f.name in info})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    expected = sae_tensor_shapes(cfg.d_in, cfg.num_latents)
    weights = folder / SAE_WEIGHTS
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError on a truncated or foreign file
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None
    absent, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if absent or extra:
        raise ValueError(
            f"{weights} is not an sae_lab SAE: "
            + "; ".join([f"tensor {n!r} is missing" for n in absent] + [f"unexpected tensor {n!r}" for n in extra])
            + f" (expected {', '.join(expected)})"
        )
    for name, shape in expected.items():
        if found[name][0] != shape:
            raise ValueError(
                f"{weights}: tensor {name!r} has shape {list(found[name][0])}, but {cfg_path} (d_in={cfg.d_in}, "
                f"num_latents={cfg.num_latents}) needs {list(shape)}"
            )
        if found[name][1] not in ("F16", "BF16", "F32", "F64"):
            raise ValueError(f"{weights}: tensor {name!r} has dtype {found[name][1]}, expected floating point")
    return info
