"""The package version, in a module of its own so that any layer can read it without importing the API."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's [project] version

__all__ = ["__version__"]
