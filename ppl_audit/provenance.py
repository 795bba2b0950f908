"""Library versions for the provenance of reports: one place that knows how to read them."""

from __future__ import annotations

import importlib.metadata
import platform

from ppl_audit._version import __version__

#: optional libraries whose versions may be asked for; read from the installed metadata, never imported
_OPTIONAL = ("arviz", "numpy", "matplotlib")


def library_versions(*optional: str) -> dict[str, str]:
    """``ppl_audit``, ``python``, ``torch`` and ``pyro`` versions, plus the ``optional`` ones asked for.

    Parameters
    ----------
    *optional : str
        Any of ``"arviz"``, ``"numpy"``, ``"matplotlib"``, in the order they should appear.

    Examples
    --------
    >>> sorted(library_versions("numpy"))
    ['numpy', 'ppl_audit', 'pyro', 'python', 'torch']
    """
    import pyro
    import torch

    unknown = [name for name in optional if name not in _OPTIONAL]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}; known: {sorted(_OPTIONAL)}")
    versions = {"ppl_audit": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "pyro": pyro.__version__}
    versions.update({name: importlib.metadata.version(name) for name in optional})
    return versions


__all__ = ["library_versions"]
