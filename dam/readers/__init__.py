"""Readers for flux-tower files: a data file plus a metadata YAML (:mod:`dam.readers.metadata`) become a site
folder of docs/site_format.md.

==================  =========================================================================================
format              files
==================  =========================================================================================
``fluxnet``         FLUXNET2015 / ONEFlux (also AmeriFlux's ``AMF_<ID>_FLUXNET_FULLSET``) / ICOS / Warm Winter
                    FULLSET ``HH``, ``HR``, ``DD`` (:mod:`.fluxnet`)
``ameriflux_base``  AmeriFlux BASE ``HH``/``HR`` (not gap-filled), also inside the BASE-BADM zip (:mod:`.ameriflux`)
``table``           any delimited text described column by column in the metadata (:mod:`.table`)
==================  =========================================================================================

:func:`convert` writes the folder atomically: everything goes to a temporary folder beside the target, which
replaces the target only when complete, so a failed conversion leaves nothing half written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dam.io_safety import relation
from dam.readers.metadata import SiteMetadata, load_metadata
from dam.schema import validate
from dam.sites import Site, SiteError, write_site

__all__ = ["convert", "detect", "load_metadata", "read", "write_atomic"]


def detect(source: str | Path, meta: SiteMetadata) -> tuple[str, Path]:
    """``(format, data file)`` for a file or a folder (``meta.format`` and ``meta.file`` decide where given)."""
    from dam.readers.ameriflux import is_ameriflux_file
    from dam.readers.fluxnet import is_fluxnet_file

    src = Path(source)
    if not src.exists():
        raise SiteError(f"source {src} does not exist")
    if meta.format == "table":
        return "table", src if src.is_dir() else src.parent
    if src.is_dir():
        if meta.file is not None:
            src = src / meta.file
            if not src.is_file():
                raise SiteError(f"{src}: no such file (metadata 'file')")
        else:
            found = sorted(
                p for p in src.iterdir() if (is_fluxnet_file(p) or is_ameriflux_file(p)) and _wanted(p, meta)
            )
            if len(found) != 1:
                raise SiteError(
                    f"{source}: {len(found)} candidate data files ({_listing(src, found, meta)}); name one with "
                    "'file' in the metadata"
                )
            src = found[0]
    if meta.format is not None:
        return meta.format, src
    if is_fluxnet_file(src):
        return "fluxnet", src
    if is_ameriflux_file(src):
        return "ameriflux_base", src
    raise SiteError(f"{src.name}: not a FLUXNET or AmeriFlux BASE file name; set 'format' in the metadata")


def _listing(folder: Path, found: list[Path], meta: SiteMetadata) -> str:
    """The candidates, or where there are none the CSV and zip files the folder does hold (a name the readers do not
    recognise is then visible, instead of "none")."""
    if found:
        return ", ".join(p.name for p in found)
    others = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".csv", ".zip"))
    if not others:
        return "none"
    names = {"fluxnet": "FLUXNET", "ameriflux_base": "AmeriFlux BASE"}
    kind = names.get(meta.format or "", "FLUXNET or AmeriFlux BASE")
    return (
        f"none; not a {kind} file name: {', '.join(others)} (known: FLX_<ID>_..._HH_....csv, ICOSETC_<ID>_..., "
        "AMF_<ID>_FLUXNET_FULLSET_..., AMF_<ID>_BASE_HH_....csv, AMF_<ID>_BASE-BADM_....zip; HR and DD alike)"
    )


def _wanted(p: Path, meta: SiteMetadata) -> bool:
    from dam.readers.ameriflux import is_ameriflux_file
    from dam.readers.fluxnet import is_fluxnet_file

    if meta.format == "fluxnet":
        return is_fluxnet_file(p)
    if meta.format == "ameriflux_base":
        return is_ameriflux_file(p)
    return True


def read(source: str | Path, meta: SiteMetadata, meta_path: str = "the metadata file") -> Site:
    """The validated :class:`Site` of a data file (or folder) and its metadata."""
    kind, path = detect(source, meta)
    if kind == "fluxnet":
        from dam.readers.fluxnet import read_fluxnet

        return read_fluxnet(path, meta, meta_path)
    if kind == "ameriflux_base":
        from dam.readers.ameriflux import read_ameriflux_base

        return read_ameriflux_base(path, meta, meta_path)
    from dam.readers.table import read_table_site

    return read_table_site(path, meta, meta_path)


def write_atomic(site: Site, out_dir: str | Path, *, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write ``site`` (and ``extra`` files: name -> source path or text) to ``out_dir`` via a temporary folder
    renamed at the end; an existing non-empty ``out_dir`` needs ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SiteError(f"{out} exists and is not empty (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_site(site, tmp, overwrite=True)
        for name, content in (extra or {}).items():
            if isinstance(content, Path):
                shutil.copyfile(content, tmp / name)
            else:
                (tmp / name).write_text(str(content))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def convert(
    source: str | Path, metadata: str | Path, output: str | Path, *, overwrite: bool = False, **changes
) -> Path:
    """Convert ``source`` (a data file or folder) described by the ``metadata`` YAML into the site folder
    ``output``. ``changes`` replace ``conversion`` settings (``gaps``, ``max_gap``). The folder also receives the
    source's SOURCE.md (where the folder has one) and a copy of the metadata file (``metadata.yaml``)."""
    for inp in (source, metadata):
        how = relation(output, inp)
        if how in ("is", "contains"):  # --overwrite replaces the whole folder: it would delete its own input
            raise SiteError(f"output {output} {how} the input {inp}: dam never writes over its inputs")
    out = Path(output)
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / "site.yaml").is_file():
        raise SiteError(f"{out} is not empty and is not a site folder (no site.yaml): --overwrite will not replace it")
    meta = load_metadata(metadata)
    if changes:
        conv = meta.conversion.model_copy(update={k: v for k, v in changes.items() if v is not None})
        conv = validate(type(meta.conversion), conv.model_dump(), "--gaps/--max-gap")
        meta = meta.model_copy(update={"conversion": conv})
    site = read(source, meta, str(metadata))
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    extra: dict = {"metadata.yaml": Path(metadata)}
    if (folder / "SOURCE.md").is_file():
        extra["SOURCE.md"] = folder / "SOURCE.md"
    return write_atomic(site, output, overwrite=overwrite, extra=extra)
