"""Reference bundles shipped with the package (trained by `make reference`)."""

from pathlib import Path

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
