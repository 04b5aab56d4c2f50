"""The README's examples run as written."""

import re
import textwrap
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    # Blocks inside list items are indented; they run as written once dedented.
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)]


def test_readme_has_the_trainer_example():
    assert any("from gankd.kernels import softmax_kl" in block for block in python_blocks())


def test_readme_python_examples_run(capsys):
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "JSD loss:" in out
    assert "torch.Size([1, 3, 128, 128])" in out and "fewer MACs" in out  # the model zoo example
    assert "torch.Size([3, 16, 16]) torch.Size([3, 64, 64])" in out  # the data example
    assert "distillation terms: {'output': " in out and "'adapted': " in out and "'total': " in out
    from gankd.distill import term_names

    assert "logit_l1" in term_names("logits") and "logit_l1" not in term_names("image")  # the README's own term


def test_readme_test_command_is_what_ci_runs():
    ci_script = (README.parent / ".ci" / "run").read_text().strip().splitlines()
    assert ci_script[-1] == "make test"
    assert "make test" in README.read_text()
