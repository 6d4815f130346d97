"""`python -m sae_lab export --sae DIR --format sparsify|saelens --out DIR`: the SAE in other libraries' formats."""

from __future__ import annotations

from dataclasses import dataclass

HELP = "write the SAE in EleutherAI sparsify's or SAELens's format (standardisation folded in) → a folder they load"


@dataclass(frozen=True)
class ExportSettings:
    """An SAE export folder rewritten for another library, reading raw feature-map tokens."""

    sae: str
    """The SAE: an export folder (cfg.json + sae.safetensors), a Hugging Face Hub id owner/name, or
    hf://owner/name/subfolder."""
    format: str
    """Target format: sparsify (SparseCoder.load_from_disk) or saelens (SAE.load_from_disk)."""
    out: str
    """Output folder."""
    overwrite: bool = False
    """Replace the output folder if it exists (only an earlier export, or an empty folder)."""

    def __post_init__(self):
        from sae_lab.export import check_format

        check_format(self.format)


def run_export(s: ExportSettings) -> dict:
    from sae_lab.export import export_sae

    out = export_sae(s.sae, s.out, s.format, overwrite=s.overwrite)
    return {"format": s.format, "out": str(out), "sae": s.sae}
