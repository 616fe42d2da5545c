"""plan.json: the plan crosses it typed. BootPlan.from_json gives back exactly the plan to_json
wrote (every plan the build made, and the fuzzer's random plans in test_fuzz.check_plan), one JSON
object per record of the plan; a file that is malformed or from another version of highboot is
refused naming the file and the field (a dotted path into the records)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from typing import Any

import pytest

from highboot.build.steps import fault_variants
from highboot.errors import HighbootError
from highboot.planning.planner import PLAN_FORMAT, STACK_RANGE, BootPlan


def built_plans(built: dict) -> list[Path]:
    plans = [built["dir"] / "plan.json", *sorted((built["dir"] / "test").glob("*/plan.json"))]
    assert len(plans) > 20, plans  # the default build and the test configurations
    return plans


def test_every_built_plan_round_trips_exactly(built: dict) -> None:
    for path in built_plans(built):
        text = path.read_text()
        plan = BootPlan.from_json(path)
        assert json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n" == text, path
        assert BootPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan, path
        assert isinstance(plan.tables.mapped[0].va, int) and isinstance(plan.rights.segments, tuple)
        assert plan.ranges.efi_region is None or isinstance(plan.ranges.efi_region, tuple)
        # One object per record, named like BootPlan's fields.
        data = json.loads(text)
        assert set(data) == {"format", *(f.name for f in fields(BootPlan))}, path
        assert all(isinstance(data[f.name], dict) for f in fields(BootPlan)), path


def test_the_plan_is_immutable(built: dict) -> None:
    """Nothing is set on a plan after it is made: the plan and its records are frozen, its lists tuples."""
    plan = built["plan"]
    with pytest.raises(FrozenInstanceError):
        plan.options = plan.options  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        plan.block.tables_offset = 0  # type: ignore[misc]
    for record in (getattr(plan, f.name) for f in fields(BootPlan)):
        assert all(not isinstance(getattr(record, f.name), (list, dict)) for f in fields(record)), record


def test_what_moves_with_kaslr_is_in_the_plan(built: dict) -> None:
    """Each range says whether KASLR slides it; plan.rs's STACK_SLIDES is the stack's."""
    for path in built_plans(built):
        plan = BootPlan.from_json(path)
        assert [r.name for r in plan.tables.mapped].count(STACK_RANGE) == 1
        assert all(r.slides == plan.kaslr.enabled for r in plan.tables.mapped if r.name != STACK_RANGE), path
        rendered = (path.parent / "gen" / "plan.rs").read_text()
        assert f"    pub const STACK_SLIDES: bool = {str(plan.stack.slides).lower()};" in rendered, path
    assert BootPlan.from_json(built["dir"] / "test" / "kaslr" / "plan.json").stack.slides


def test_the_fault_is_an_enum_of_every_choice(built: dict) -> None:
    """plan.rs's `enum Fault` has a variant for each fault FAULT can name, and FAULT is the plan's
    (None without one); the test builds inject every fault."""
    faults, injected = fault_variants(), set()
    for path in built_plans(built):
        plan = BootPlan.from_json(path)
        rendered = (path.parent / "gen" / "plan.rs").read_text()
        variants = (f"        /// FAULT={name}\n        {variant},\n" for name, variant in faults.items())
        assert all(v in rendered for v in variants), path
        value = f"Some(Fault::{faults[plan.faults.inject]})" if plan.faults.inject else "None"
        assert f"\n    pub const FAULT: Option<Fault> = {value};" in rendered, path
        injected.add(plan.faults.inject)
    assert injected == {"", *faults}


@pytest.fixture(scope="module")
def good(built: dict) -> dict[str, Any]:
    return json.loads((built["dir"] / "test" / "kaslr" / "plan.json").read_text())


def refusal(data: Any) -> HighbootError:
    with pytest.raises(HighbootError) as err:
        BootPlan.from_json(data)
    return err.value


def test_a_plan_from_an_older_highboot_is_refused(good: dict) -> None:
    old = {k: v for k, v in good.items() if k != "format"}
    err = refusal(old)
    assert err.file == "plan.json" and err.field == "format"
    assert f"this highboot reads plan format {PLAN_FORMAT}" in err.message and "rebuild" in err.message
    err = refusal({**good, "format": PLAN_FORMAT - 1})
    assert err.field == "format" and f"format {PLAN_FORMAT - 1}:" in err.message


@pytest.mark.parametrize("change, field, message", [
    (lambda p: p["placement"].pop("entry"), "placement.entry", "missing"),
    (lambda p: p.pop("block"), "block", "missing"),
    (lambda p: p.update(colour="red"), "colour", "unknown field"),
    (lambda p: p["options"].update(colour="red"), "options.colour", "unknown field"),
    (lambda p: p.update(kaslr=True), "kaslr", "expected an object, found a boolean"),
    (lambda p: p["placement"].update(entry="0xffffffff80000000"), "placement.entry",
     "expected an integer, found a string"),
    (lambda p: p["kaslr"].update(enabled=1), "kaslr.enabled", "expected a boolean, found an integer"),
    (lambda p: p["tables"].update(levels=True), "tables.levels", "expected an integer, found a boolean"),
    (lambda p: p["tables"].update(shifts=39), "tables.shifts", "expected an array, found an integer"),
    (lambda p: p["tables"]["mapped"][1].update(va=None), "tables.mapped[1].va", "expected an integer, found null"),
    (lambda p: p["tables"]["mapped"][0].pop("slides"), "tables.mapped[0].slides", "missing"),
    (lambda p: p["rights"]["segments"].__setitem__(0, [1, 2]), "rights.segments[0]",
     "expected an object, found an array"),
    (lambda p: p["ranges"].update(efi_region=[1, 2, 3]), "ranges.efi_region", "expected an array of 2, found 3 items"),
    (lambda p: p["block"]["entries"].__setitem__(0, [1, "2"]), "block.entries[0][1]", "expected an integer"),
    (lambda p: p["block"].update(tables_offset=-0.5), "block.tables_offset", "expected an integer, found a number"),
    (lambda p: p["faults"].update(inject=None), "faults.inject", "expected a string, found null"),
])
def test_a_malformed_field_is_refused_by_name(good: dict, change: Any, field: str, message: str) -> None:
    data = json.loads(json.dumps(good))
    change(data)
    err = refusal(data)
    assert err.file == "plan.json" and err.field == field, err
    assert message in err.message, err


def test_an_unreadable_plan_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    err = refusal(path)
    assert err.file == str(path) and "cannot read the plan" in err.message
    path.write_text('{"format": ')
    err = refusal(path)
    assert err.file == str(path) and "cannot read the plan" in err.message
    path.write_text("[1, 2]")
    assert "expected a JSON object, found an array" in refusal(path).message


def test_a_malformed_plan_stops_the_render_step(built: dict, good: dict, tmp_path: Path) -> None:
    from highboot.build.steps import render_file

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**good, "block": {**good["block"], "table_count": "many"}}))
    out = tmp_path / "plan.rs"
    with pytest.raises(HighbootError) as err:
        render_file([], "loader/plan.rs.j2", str(out), str(path), {})
    assert err.value.file == str(path) and err.value.field == "block.table_count"
    assert not out.exists()
