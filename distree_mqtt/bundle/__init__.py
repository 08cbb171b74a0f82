"""Stage bundles: a directory with manifest.json and one .safetensors file per stage."""

from distree_mqtt.bundle.loader import BundleError, load_manifest, load_network, load_stage
from distree_mqtt.bundle.manifest import SCHEMA_VERSION, Manifest, ProfilePoint, StageEntry
from distree_mqtt.bundle.writer import write_bundle

__all__ = [
    "SCHEMA_VERSION",
    "BundleError",
    "Manifest",
    "ProfilePoint",
    "StageEntry",
    "load_manifest",
    "load_network",
    "load_stage",
    "write_bundle",
]
