"""The README's examples run as written."""

import json
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


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_commands_run_in_order(tmp_path, monkeypatch, proxy_cache):
    # The commands of "Training and distilling from configs" (train, distill, resume, torchrun, eval, generate,
    # export), as written and in order, from a fresh directory; training runs get fewer steps.
    import shlex
    import shutil
    import subprocess
    import sys

    from gankd.cli import main

    fewer_steps = ["--set", "steps=4", "--set", "checkpoint_every=2", "--set", "eval.num_samples=64"]
    blocks = re.findall(r"```bash\n(.*?)```", section("Training and distilling from configs"), flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [
        shlex.split(line, comments=True)
        for line in lines
        if line.startswith((".venv/bin/gankd", "torchrun")) and "<" not in line
    ]  # not the multi-node template
    assert [words[0] for words in commands].count("torchrun") == 1
    assert [words[1] for words in commands if words[0] != "torchrun"] == [
        "train", "distill", "train", "train", "train", "eval", "eval", "generate", "generate", "eval", "export",
    ]  # fmt: skip
    shutil.copytree(README.parent / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    for words in commands:
        training = words[0] == "torchrun" or words[1] in ("train", "distill")
        arguments = [*words[1:], *(fewer_steps if training else [])]
        if words[0] == "torchrun":
            result = subprocess.run([sys.executable, "-m", "torch.distributed.run", *arguments], capture_output=True,
                                    text=True, timeout=600)  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
        else:
            main(arguments)
    assert json.loads(Path("metrics.json").read_text())["metrics"]["fd_digits"] > 0
    assert len(list(Path("samples").rglob("*.png"))) == 1000 and Path("student.onnx").is_file()
    assert json.loads(Path("runs/digits_cnn_teacher/metrics.json").read_text())["metrics"]["accuracy"] > 0
    assert Path("runs/digits_cnn_ddp/checkpoints/last.pt").is_file()
