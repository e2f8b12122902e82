"""The public Python API: README.md's "Python API" block runs as written against the session
cache and a matcher trained through the API, and `import omama` stays cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import omama

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block() -> str:
    """The first ```python block under the README's "## Python API" heading."""
    text = README.read_text()
    section = text.split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no ```python block under ## Python API"
    return match.group(1)


@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    cfg = omama.TrainConfig(
        cache=cache_dir, out=out, epochs=1, batch_size=8, n_masks=8, workers=0, device="cpu"
    )
    omama.run_train(cfg)
    return out / "best.pt"


def test_readme_block_scores_one_pair_as_the_batch_does(cache_dir, trained):
    code = readme_block()
    for placeholder in ("demo_out/cache", "demo_out/run/best.pt"):
        assert placeholder in code, placeholder
    code = code.replace("demo_out/run/best.pt", str(trained))
    code = code.replace("demo_out/cache", str(cache_dir))
    ns: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), ns)

    scored, pair, mask = ns["scored"], ns["pair"], ns["mask"]
    assert 0 <= scored.best < scored.n_cands and scored.top5[0] == scored.best
    assert set(mask) == {"size", "counts"}
    # the same pair scored inside a padded batch of the whole split picks the same candidate
    cache = omama.Cache(cache_dir)
    pairs = cache.samples("exo2ego", "test")
    model = omama.build_matcher(*cache.role_grids(pairs), trained, cache.manifest.backbone)
    batch = omama.score_samples(cache, model, "exo2ego", pairs, torch.device("cpu"), progress=False)
    assert batch[0].sample == pair
    assert (batch[0].best, batch[0].top5) == (scored.best, scored.top5)
    assert batch[0].confidence == pytest.approx(scored.confidence, abs=1e-6)


def test_import_omama_loads_no_stage():
    heavy = "('torch', 'h5py', 'numpy')"
    code = f"import sys, omama; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_subpackages_export_their_main_names():
    import omama.cache
    import omama.matcher
    import omama.precompute
    import omama.predict
    import omama.train

    assert omama.cache.Cache is omama.Cache
    assert omama.matcher.build_matcher is omama.build_matcher
    assert omama.precompute.run_precompute is omama.run_precompute
    assert omama.predict.run_eval is omama.run_eval
    assert omama.train.run_train is omama.run_train
