"""Reference bundles shipped with the package (trained by `make reference`)."""

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

REFERENCE_DIR = Path(__file__).parent
REFERENCE_MODELS = ("mnist", "cifar10")


def reference_bundle(name: str) -> Path:
    """Directory of a shipped reference bundle; a clear error when it is not there."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(REFERENCE_MODELS)}")
    path = REFERENCE_DIR / name
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"reference bundle {name!r} is not built yet: run `make reference-{name}`")
    return path


def _bundle_path(value: Any) -> Any:
    """`reference:<name>` in a settings file names a bundle shipped with the package."""
    if isinstance(value, str) and value.startswith("reference:"):
        return reference_bundle(value.removeprefix("reference:"))
    return value


# A settings field holding a bundle directory, or `reference:<name>`.
BundlePath = Annotated[Path | None, BeforeValidator(_bundle_path)]
