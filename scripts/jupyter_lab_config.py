"""Jupyter server configuration for ``make lab``: the chapters, live, with the project's kernel.

Every notebook's kernel starts in the project root, as when the book is built
(``scripts/execute_notebook.py`` runs papermill with ``cwd`` = the project), so
the chapters' paths (``results/ablation.json``, ``runs/book``, ...) mean the same
thing in JupyterLab as in the book. Used as::

    .venv/bin/jupyter lab --config=scripts/jupyter_lab_config.py

(the Makefile's ``lab`` target, and the browser test ``tests/test_lab_browser.py``).
"""

from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

ROOT = Path(__file__).resolve().parent.parent


class ProjectRootKernelManager(AsyncMappingKernelManager):
    """Kernels start in the project root, whichever folder the notebook is in."""

    def cwd_for_path(self, path, **kwargs):
        return str(ROOT)


c = get_config()  # noqa: F821 - provided by the Jupyter config loader
c.ServerApp.root_dir = str(ROOT)
c.ServerApp.kernel_manager_class = ProjectRootKernelManager
c.LabApp.default_url = "/lab/tree/notebooks"  # open on the chapters
c.ServerApp.allow_root = True  # containers and CI run as root
# offline: no news feed, no update check, no extension index
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"
