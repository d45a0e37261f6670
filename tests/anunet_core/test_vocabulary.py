"""The vocabulary: organ, modality and depth checks, and the consistency of the label tables."""

from __future__ import annotations

import itertools

import pytest

from anunet_core import vocabulary
from anunet_core.vocabulary import (
    CHAOS_GREY,
    CHAOS_GREY_RANGES,
    DEPTHS,
    LITS_LABELS,
    MAX_DEPTH,
    MODALITIES,
    MSD_LABELS,
    ORGAN_LABEL_VALUES,
    ORGANS,
    TOTALSEG_LABELS,
    is_depth,
    validate_depth,
    validate_modality,
    validate_organ,
)


def test_the_papers_organs_modalities_and_depths() -> None:
    assert ORGANS == ("liver", "spleen", "kidney")
    assert MODALITIES == ("CT", "MR")
    assert MAX_DEPTH == 4 and DEPTHS == (1, 2, 3, 4)


def test_all_names_exist() -> None:
    assert set(vocabulary.__all__) <= set(vars(vocabulary))


# --- organs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("organ", ORGANS)
@pytest.mark.parametrize("spelling", [str, str.upper, str.title, lambda s: f"  {s}\n"])
def test_validate_organ_normalises(organ: str, spelling) -> None:
    assert validate_organ(spelling(organ)) == organ


@pytest.mark.parametrize("bad", ["kidneys", "kidney_left", "lung", "", " ", "liver spleen", None, 1, True])
def test_validate_organ_refuses_the_rest(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        validate_organ(bad)  # type: ignore[arg-type]
    assert str(caught.value) == f"organ must be one of ('liver', 'spleen', 'kidney'), got {bad!r}"
    assert "\n" not in str(caught.value)


# --- modalities --------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("spelling", [str, str.lower, lambda s: f" {s} "])
def test_validate_modality_normalises(modality: str, spelling) -> None:
    assert validate_modality(spelling(modality)) == modality


@pytest.mark.parametrize("bad", ["MRI", "PET", "US", "C T", "", None, 0])
def test_validate_modality_refuses_the_rest(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        validate_modality(bad)  # type: ignore[arg-type]
    assert str(caught.value) == f"modality must be one of ('CT', 'MR'), got {bad!r}"


# --- depths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_depths_are_accepted_as_themselves(depth: int) -> None:
    assert is_depth(depth) is True
    result = validate_depth(depth)
    assert result == depth and type(result) is int


BAD_DEPTHS = [0, 5, -1, 100, True, False, 2.0, 1.5, "2", "L2", None, (2,), [2]]


@pytest.mark.parametrize("bad", BAD_DEPTHS, ids=repr)
def test_bad_depths_are_refused_with_one_line(bad: object) -> None:
    assert is_depth(bad) is False
    with pytest.raises(ValueError) as caught:
        validate_depth(bad)
    assert str(caught.value) == f"depth must be one of 1..4, got {bad!r}"
    with pytest.raises(ValueError) as caught:
        validate_depth(bad, what="--depth")
    assert str(caught.value) == f"--depth must be one of 1..4, got {bad!r}"


def test_an_int_subclass_that_is_not_bool_is_a_depth() -> None:
    class Level(int):
        pass

    assert is_depth(Level(3)) is True


# --- label tables ------------------------------------------------------------------------------


def test_totalsegmentator_values_are_the_published_ones_and_unique() -> None:
    # TotalSegmentator v2 "total" task class map
    assert TOTALSEG_LABELS["spleen"] == 1
    assert TOTALSEG_LABELS["kidney_right"] == 2
    assert TOTALSEG_LABELS["kidney_left"] == 3
    assert TOTALSEG_LABELS["liver"] == 5
    assert TOTALSEG_LABELS["vertebrae_S1"] == 26
    assert TOTALSEG_LABELS["vertebrae_L1"] == 31
    assert TOTALSEG_LABELS["vertebrae_T12"] == 32
    assert TOTALSEG_LABELS["vertebrae_T1"] == 43
    assert TOTALSEG_LABELS["heart"] == 51
    assert TOTALSEG_LABELS["inferior_vena_cava"] == 63
    values = list(TOTALSEG_LABELS.values())
    assert len(values) == len(set(values))
    assert all(isinstance(v, int) and v > 0 for v in values)  # 0 is background


def test_organ_label_values_cover_the_organs_with_totalsegmentator_values() -> None:
    assert tuple(ORGAN_LABEL_VALUES) == ORGANS
    assert ORGAN_LABEL_VALUES["liver"] == (5,)
    assert ORGAN_LABEL_VALUES["spleen"] == (1,)
    assert ORGAN_LABEL_VALUES["kidney"] == (2, 3)  # both kidneys
    known = set(TOTALSEG_LABELS.values())
    for values in ORGAN_LABEL_VALUES.values():
        assert values and set(values) <= known
    # no label value belongs to two organs
    everything = [v for values in ORGAN_LABEL_VALUES.values() for v in values]
    assert len(everything) == len(set(everything))


def test_challenge_tables() -> None:
    assert dict(LITS_LABELS) == {"liver": 1, "liver_tumor": 2}
    assert dict(MSD_LABELS) == {"organ": 1, "tumor": 2}


def test_chaos_grey_ranges_contain_their_value_and_do_not_overlap() -> None:
    labels = [label for label, *_ in CHAOS_GREY]
    assert len(labels) == len(set(labels))
    assert set(labels) <= set(TOTALSEG_LABELS.values())
    # every organ of the paper is decodable
    assert set(labels) >= {v for values in ORGAN_LABEL_VALUES.values() for v in values}
    for label, written, low, high in CHAOS_GREY:
        assert 0 < low <= written <= high <= 255, (label, written, low, high)
    for (_, _, low_a, high_a), (_, _, low_b, high_b) in itertools.combinations(CHAOS_GREY, 2):
        assert high_a < low_b or high_b < low_a
    # 0 (background) decodes to nothing
    assert all(low > 0 for _, _, low, _ in CHAOS_GREY)


def test_chaos_written_values_are_the_readme_ones() -> None:
    written = {label: grey for label, grey, _, _ in CHAOS_GREY}
    assert written == {
        TOTALSEG_LABELS["liver"]: 63,
        TOTALSEG_LABELS["kidney_right"]: 126,
        TOTALSEG_LABELS["kidney_left"]: 189,
        TOTALSEG_LABELS["spleen"]: 252,
    }


def test_chaos_grey_ranges_are_derived_from_chaos_grey() -> None:
    assert CHAOS_GREY_RANGES == tuple((low, high, label) for label, _, low, high in CHAOS_GREY)
    # decoding a written grey value gives back its label
    for label, written, _, _ in CHAOS_GREY:
        decoded = [value for low, high, value in CHAOS_GREY_RANGES if low <= written <= high]
        assert decoded == [label]


# --- read-only ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", [TOTALSEG_LABELS, ORGAN_LABEL_VALUES, LITS_LABELS, MSD_LABELS], ids=["totalseg", "organs", "lits", "msd"]
)
def test_mappings_are_read_only(table) -> None:
    key = next(iter(table))
    before = dict(table)
    with pytest.raises(TypeError):
        table[key] = 99
    with pytest.raises(TypeError):
        table["new"] = 1
    with pytest.raises(TypeError):
        del table[key]
    assert dict(table) == before


@pytest.mark.parametrize("table", [ORGANS, MODALITIES, DEPTHS, CHAOS_GREY, CHAOS_GREY_RANGES])
def test_sequences_are_tuples(table) -> None:
    assert isinstance(table, tuple)
    with pytest.raises(TypeError):
        table[0] = table[0]  # type: ignore[index]
