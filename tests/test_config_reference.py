"""docs/configuration.md is generated from the configuration models and must be up to date."""

from pathlib import Path

from dam.config_reference import render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_page_is_up_to_date():
    assert PAGE.read_text() == render(), "regenerate: python -m dam.config_reference > docs/configuration.md"


def test_page_lists_every_key_with_its_range():
    page = render()
    for row in ("| `network.epochs` | int | >= 1 | 40 |", "| `network.learning_rate` | float | > 0 |",
                "| `spinup_cycles` | int | >= 0, <= 100 |", "| `time_block` | int | >= 1 | 240 |",
                "| `options.OPT_FRZ` |", "| `n_steps` |"):  # fmt: skip
        assert row in page, row
    assert "`source`" not in page  # set by the program, not a key of the file
