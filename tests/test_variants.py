"""aios_lab.variants: one registry shape for every concept with named variants."""
import pytest

from aios_lab.errors import PolicyError
from aios_lab.variants import Variants


def _registry() -> tuple[Variants, list[str]]:
    loads: list[str] = []
    return Variants("model kind", PolicyError, "use one of", lambda: loads.append("builtin")), loads


def test_a_class_registers_under_its_name_and_the_builtins_load_on_lookup():
    reg, loads = _registry()

    @reg.register
    class A:
        name = "a"

    assert loads == []  # registering does not import the built-ins
    assert reg.get("a") is A and reg.names() == ["a"] and "a" in reg and "b" not in reg
    assert loads == ["builtin"] * 4
    reg.register(A)  # the same class again (a module imported twice): no change
    assert reg.names() == ["a"]


def test_an_unknown_name_and_a_name_taken_twice_are_the_concepts_own_error():
    reg, _ = _registry()

    @reg.register
    class A:
        name = "a"

    with pytest.raises(PolicyError, match="unknown model kind 'b'") as e:
        reg.get("b")
    assert e.value.hint == "use one of a"

    class B:
        name = "a"

    with pytest.raises(PolicyError, match=r"model kind 'a' is registered twice \(A, B\)"):
        reg.register(B)
    assert reg.get("a") is A
