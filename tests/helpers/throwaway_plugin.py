"""A pytest plugin that installs the throwaway method (:mod:`tests.helpers.throwaway_method`)
before the tests are collected, so the shared tests, which list the registered methods' toy
configs at collection, parametrize over its toy config too. Used as
``pytest -p tests.helpers.throwaway_plugin ...`` by ``tests/test_method_contract.py``.
"""

import shutil
import tempfile

from tests.helpers.throwaway_method import installed_throwaway_method

# The folder the method is written into starts so; its toy config's path, hence the test ids
# of its parameters, contain it (``pytest -k throwaway_plugin_`` selects them).
PLUGIN_ROOT_PREFIX = "throwaway_plugin_"
_INSTALLED = {}


def pytest_configure(config):
    root = tempfile.mkdtemp(prefix=PLUGIN_ROOT_PREFIX)
    context = installed_throwaway_method(root)
    method = context.__enter__()
    # The method discovery imports it (on sys.path, not imported yet), as for an installed one.
    from projects.config import method_config_adders

    method_config_adders()
    _INSTALLED.update(root=root, context=context, method=method)


def pytest_report_header(config):
    method = _INSTALLED.get("method")
    return f"throwaway method installed: {method.name} ({method.root})" if method else None


def pytest_unconfigure(config):
    if _INSTALLED:
        _INSTALLED["context"].__exit__(None, None, None)
        shutil.rmtree(_INSTALLED["root"], ignore_errors=True)
        _INSTALLED.clear()
