"""batchgen: YAML manifests in, generated images and a classified report out."""

__version__ = "0.3.0"  # the same as pyproject.toml's (tests/test_install.py checks)
