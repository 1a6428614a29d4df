"""batchgen: YAML manifests in, generated images and a classified report out."""

__version__ = "0.2.0"
