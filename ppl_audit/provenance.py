"""Library versions for the provenance of reports: one place that knows how to read them."""

from __future__ import annotations

import platform

#: how to read each optional library's version (imported only when asked for)
_OPTIONAL = {
    "arviz": lambda: __import__("ppl_audit.diagnostics", fromlist=["arviz_version"]).arviz_version(),
    "numpy": lambda: __import__("numpy").__version__,
    "matplotlib": lambda: __import__("matplotlib").__version__,
}


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

    from ppl_audit import __version__

    unknown = [name for name in optional if name not in _OPTIONAL]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}; known: {sorted(_OPTIONAL)}")
    versions = {"ppl_audit": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "pyro": pyro.__version__}
    versions.update({name: _OPTIONAL[name]() for name in optional})
    return versions


__all__ = ["library_versions"]
