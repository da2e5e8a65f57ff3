"""Genotype parsing, serialisation and validation."""
from __future__ import annotations

import json

import pytest

import nasnetzoo
from nasnetzoo import Genotype, GenotypeError, UnknownOpError
from nasnetzoo.genotype import from_dict, from_file, from_string
from nasnetzoo.registry import genotype_dir, list_genotypes

ALL = list_genotypes()

# The official DARTS_V2 line as it appears in quark0/darts cnn/genotypes.py.
DARTS_V2_OFFICIAL = (
    "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def test_every_published_architecture_has_a_file():
    expected = {"nasnet_a", "amoebanet_a", "pnasnet5", "enas", "darts_v1", "darts_v2", "pcdarts_cifar",
                "pcdarts_imagenet", "pdarts", "snas_mild", "gdas_v1"}
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_file_has_provenance(name):
    g = nasnetzoo.get_genotype(name)
    assert g.name == name
    for key in ("paper", "repo", "file", "symbol"):
        assert g.provenance.get(key), f"{name}: provenance.{key} missing"


@pytest.mark.parametrize("name", ALL)
def test_round_trip_every_format(name, tmp_path):
    g = nasnetzoo.get_genotype(name)
    assert from_dict(g.to_dict()) == g
    assert from_dict(json.loads(json.dumps(g.to_dict()))).to_dict() == g.to_dict()
    assert from_string(g.to_string()) == g
    for suffix in (".yaml", ".json"):
        path = g.save(tmp_path / f"g{suffix}")
        again = from_file(path)
        assert again == g and again.to_dict() == g.to_dict()
    # The file on disk is exactly what serialising gives back (lossless, stable formatting).
    on_disk = from_file(genotype_dir() / f"{name}.yaml")
    assert from_dict(on_disk.to_dict()).to_yaml() == on_disk.to_yaml()


def test_official_string_matches_reference_file():
    pasted = from_string(DARTS_V2_OFFICIAL)
    assert pasted == nasnetzoo.get_genotype("darts_v2")


def test_string_forms_users_paste():
    line = ("2019-07-10 12:00:00 genotype = Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), "
            "('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), "
            "('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), "
            "('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))")
    assert from_string(line) == nasnetzoo.get_genotype("pcdarts_cifar")
    g = nasnetzoo.get_genotype("darts_v2")
    positional = ("Genotype(" + repr([tuple(e.to_list()) for e in g.normal.edges]) + ", range(2, 6), "
                  + repr([tuple(e.to_list()) for e in g.reduce.edges]) + ", [2, 3, 4, 5])")
    assert from_string(positional) == g
    # AutoDL groups the edges per node and adds connectivity fields.
    grouped = ("Genotype(normal=[" + ", ".join(f"({n[0].op!r}, {n[0].input}), ({n[1].op!r}, {n[1].input})"
                                              .join("()") for n in g.normal.nodes)
               + "], normal_concat=[2, 3, 4, 5], reduce=[" +
               ", ".join(f"({n[0].op!r}, {n[0].input}), ({n[1].op!r}, {n[1].input})".join("()")
                         for n in g.reduce.nodes) + "], reduce_concat=[2, 3, 4, 5], connectN=None, connects=None)")
    assert from_string(grouped) == g
    # Old GDAS genotypes carry each edge's search weight as a third element.
    weighted = DARTS_V2_OFFICIAL.replace(", 0)", ", 0, 0.9)")
    assert from_string(weighted) == g


def test_string_is_never_evaluated():
    with pytest.raises(GenotypeError, match="nothing is evaluated"):
        from_string("Genotype(normal=__import__('os').system('echo pwned'), normal_concat=[2], "
                    "reduce=[], reduce_concat=[2])")


def test_parse_accepts_objects_files_strings_and_dicts(tmp_path):
    g = nasnetzoo.get_genotype("pdarts")
    path = g.save(tmp_path / "pdarts.yaml")
    for value in (g, g.to_dict(), g.to_string(), str(path), path):
        assert Genotype.parse(value) == g


def test_nasnet_family_concat_defaults_to_unused_states():
    # ENAS concatenates exactly the states no node reads; TF-slim's cells list theirs by hand
    # (PNASNet concatenates state 4 although node 5 reads it), so the files keep concat explicit.
    data = nasnetzoo.get_genotype("enas").to_dict()
    for cell in ("normal", "reduce"):
        del data[cell]["concat"]
    parsed = from_dict(data)
    assert parsed.normal.concat == (2, 3, 4, 5, 6) and parsed.reduce.concat == (2, 4, 5, 6)
    assert parsed == nasnetzoo.get_genotype("enas")


def test_lookup_by_model_alias():
    assert nasnetzoo.get_genotype("PC-DARTS-ImageNet").name == "pcdarts_imagenet"
    assert nasnetzoo.get_genotype("DARTS").name == "darts_v2"


def _darts(**changes):
    data = nasnetzoo.get_genotype("darts_v2").to_dict()
    for path, value in changes.items():
        cell, field_ = path.split("__")
        data[cell][field_] = value
    return data


@pytest.mark.parametrize("data, message", [
    (_darts(normal__nodes=[[["sep_conv_3x4", 0], ["sep_conv_3x3", 1]]]),
     r"normal cell, node 2: unknown op 'sep_conv_3x4'.*Did you mean 'sep_conv_3x3'"),
    (_darts(reduce__nodes=[[["max_pool_3x3", 0], ["max_pool_3x3", 1]], [["skip_connect", 3], ["max_pool_3x3", 1]]]),
     r"reduce cell, node 3: input 3 of op 'skip_connect' is out of range \(it points forward"),
    (_darts(normal__nodes=[[["sep_conv_3x3", -1], ["sep_conv_3x3", 1]]]),
     r"normal cell, node 2: input -1 .* out of range"),
    (_darts(normal__nodes=[[["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 0]]]),
     r"normal cell, node 2: has 3 edge\(s\)"),
    (_darts(normal__nodes=[[["sep_conv_3x3", 0]]]), r"normal cell, node 2: has 1 edge"),
    (_darts(normal__concat=[]), r"normal cell: concat is empty"),
    (_darts(reduce__concat=[2, 3, 9]), r"reduce cell: concat entry 9 is out of range; valid states are 0..5"),
    (_darts(normal__concat=[2, 2]), r"normal cell: concat \[2, 2\] repeats a state"),
    (_darts(normal__nodes=[]), r"normal cell has no nodes"),
    ({**_darts(), "family": "tf"}, r"unknown genotype family 'tf'"),
    ({**_darts(), "normall": {}}, r"unknown genotype key\(s\) \['normall'\]"),
    ({"normal": _darts()["normal"]}, r"genotype has no 'reduce' cell"),
])
def test_bad_genotypes_name_cell_node_and_value(data, message):
    with pytest.raises(GenotypeError, match=message):
        from_dict(data)


def test_op_of_the_other_family_is_refused():
    data = _darts(normal__nodes=[[["separable_3x3_2", 0], ["sep_conv_3x3", 1]]])
    with pytest.raises(UnknownOpError, match="unknown op 'separable_3x3_2' in the darts family"):
        from_dict(data)


def test_flat_darts_list_with_odd_edge_count():
    with pytest.raises(GenotypeError, match="even count"):
        from_string("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0)], "
                    "normal_concat=[2], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")


def test_malformed_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("normal: [unclosed\n")
    with pytest.raises(GenotypeError, match="not valid YAML"):
        from_file(bad)
    with pytest.raises(GenotypeError, match="does not exist"):
        from_file(tmp_path / "missing.yaml")
    with pytest.raises(GenotypeError, match="no 'Genotype"):
        from_string("normal=[('sep_conv_3x3', 0)]")
    with pytest.raises(GenotypeError, match="unbalanced"):
        from_string("Genotype(normal=[('sep_conv_3x3', 0)")


def test_custom_op_registration():
    from torch import nn

    @nasnetzoo.register_op("test_conv_3x3")
    def _conv(C_in, C_out, stride, **_):
        return nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False)

    try:
        data = _darts(normal__nodes=[[["test_conv_3x3", 0], ["sep_conv_3x3", 1]]], normal__concat=[2])
        g = from_dict(data)
        model = nasnetzoo.load(g, dataset="cifar10", C=8, layers=3)
        assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1
                   for m in model.cells[0]._ops.modules())
        with pytest.raises(ValueError, match="already registered"):
            nasnetzoo.register_op("test_conv_3x3", _conv)
    finally:
        from nasnetzoo.ops import unregister_op
        unregister_op("test_conv_3x3")


# ---------------------------------------------------------------- per-node combine (NASNet search space)
def _nasnet_with_combine(combine):
    d = nasnetzoo.get_genotype("nasnet_a").to_dict()
    d.pop("name", None)
    d["normal"]["combine"] = combine
    return d


def test_combine_concat_round_trips_through_dict_yaml_and_string():
    g = Genotype.from_dict(_nasnet_with_combine(["add", "concat", "add", "add", "concat"]))
    assert g.normal.combine == ("add", "concat", "add", "add", "concat")
    assert g.reduce.adds_only
    assert Genotype.from_dict(g.to_dict()) == g
    assert Genotype.from_string(g.to_string()) == g
    assert "normal_combine=" in g.to_string() and "reduce_combine" not in g.to_string()


def test_all_add_combine_is_the_default_form():
    plain = nasnetzoo.get_genotype("nasnet_a")
    explicit = Genotype.from_dict(_nasnet_with_combine(["add"] * 5))
    assert explicit == plain and "combine" not in explicit.to_dict()["normal"]


@pytest.mark.parametrize("combine, message", [
    (["add", "concat"], "has 2 entries for 5 nodes"),
    (["add", "add", "mul", "add", "add"], "node 4: combine 'mul'"),
])
def test_bad_combine_is_named(combine, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(_nasnet_with_combine(combine))


def test_concat_combine_is_refused_for_darts_cells():
    d = nasnetzoo.get_genotype("pcdarts").to_dict()
    d["normal"]["combine"] = ["concat", "add", "add", "add"]
    with pytest.raises(GenotypeError, match="only for family 'nasnet'"):
        Genotype.from_dict(d)
