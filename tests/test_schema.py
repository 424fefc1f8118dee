"""The shared configuration layer: unknown keys with suggestions, ranges, required keys, nested models."""

from typing import Literal

import pytest
from pydantic import Field

from dam.schema import ConfigError, Strict, reference_table, validate


class _Net(Strict):
    epochs: int = Field(40, ge=1, description="passes over the training windows")
    learning_rate: float = Field(3e-3, gt=0, description="Adam step size")


class _Top(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="run name")
    network: _Net = _Net()
    supercooled: Literal["niu06", "koren99"] = "niu06"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "supercoold": "niu06"}, "unknown key 'supercoold'; did you mean 'supercooled'?"),
        ({"name": "x", "network": {"learningrate": 1}}, "key 'network.learningrate'; did you mean 'learning_rate'?"),
        ({"name": "x", "network": {"epochs": -5}}, "network.epochs: Input should be greater than or equal to 1"),
        ({"name": "x", "network": {"learning_rate": -0.01}}, "network.learning_rate: Input should be greater than 0"),
        ({}, "missing required key 'name'"),
        ({"name": "../../x"}, "name: String should match pattern"),
        ({"name": "x", "supercooled": "bad"}, "supercooled: Input should be 'niu06' or 'koren99'"),
        ([1, 2], "expected a mapping"),
    ],
)  # fmt: skip
def test_bad_configurations_name_the_key(data, message):
    with pytest.raises(ConfigError, match="^quick.yaml: ") as info:
        validate(_Top, data, "quick.yaml")
    assert message in str(info.value)


def test_valid_configuration_and_reference_rows():
    cfg = validate(_Top, {"name": "run_1", "network": {"epochs": 3}}, "quick.yaml")
    assert cfg.network.epochs == 3 and cfg.network.learning_rate == 3e-3
    rows = {r[0]: r for r in reference_table(_Top)}
    assert rows["network.epochs"] == ("network.epochs", "int", "40", "passes over the training windows")
    assert rows["name"][2] == "required"
    assert rows["supercooled"][1] == "one of 'niu06', 'koren99'"
