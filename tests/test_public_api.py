"""Every public name resolves, and importing the package stays cheap (no torch, no LLM client)."""

import subprocess
import sys

import trl_crome


def test_every_public_name_resolves():
    for name in trl_crome.__all__:
        assert getattr(trl_crome, name) is not None, name


def test_import_is_lazy():
    code = "import sys, trl_crome; print(sorted(m for m in ('torch', 'google.genai', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
