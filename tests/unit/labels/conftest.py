import pytest

from tests.unit.labels.cells import cubic_cspbi3


@pytest.fixture
def cubic():
    """The 5-atom cubic CsPbI3 cell rattled by 0.05 A."""
    return cubic_cspbi3(rattle=0.05, seed=1)


@pytest.fixture
def xtb_settings():
    """Default xTB settings, except that the 6.3 A test cells are allowed."""
    from hipqeq.config import validate_section

    return validate_section("xtb", {"allow_small_cells": True})
