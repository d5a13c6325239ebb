"""The worked example and the test template of docs/models.md ("Adding a model") run as
they are written: the page's Python blocks are executed in order in one namespace, and
the template's own assertions (the bound ordering against the exact log p(x), importance
sampling and AIS reaching it) are the test."""

from __future__ import annotations

import pathlib
import re

PAGE = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'models.md'


def _blocks_of_section(text: str, heading: str) -> list[str]:
    start = text.index(heading)
    end = text.find('\n## ', start + len(heading))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r'```python\n(.*?)```', section, re.S)


def test_adding_a_model_example_and_template_run_as_written():
    blocks = _blocks_of_section(PAGE.read_text(), '## Adding a model')
    assert len(blocks) == 2, 'the example and the test template'
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), 'exec'), namespace)  # noqa: S102 (our own docs)
    assert namespace['elbo']['elbo'].shape == (100,)
