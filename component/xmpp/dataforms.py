"""XEP-0004 data forms: reading submitted values and building forms and results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from component.xmpp.namespaces import DATA_FORMS_NS


@dataclass(frozen=True)
class Field:
    """One field to render: its var, type, label, values and whether it is required."""

    var: str
    type: str = "text-single"
    label: str | None = None
    values: Sequence[str] = ()
    required: bool = False
    desc: str | None = None


def values_of(form: ET.Element) -> dict[str, list[str]]:
    """A submitted form's values by var (the last of repeated vars wins)."""
    return {
        field.get("var", ""): [v.text or "" for v in field.findall(f"{{{DATA_FORMS_NS}}}value")]
        for field in form.findall(f"{{{DATA_FORMS_NS}}}field")
    }


def single(values: dict[str, list[str]], var: str) -> str | None:
    """The field's single value, stripped; None when absent or empty."""
    found = "\n".join(values.get(var, [])).strip()
    return found or None


def make_form(
    form_type: str, title: str, fields: Sequence[Field], instructions: str | None = None
) -> ET.Element:
    """An <x xmlns='jabber:x:data'/> of type form or result."""
    form = ET.Element(f"{{{DATA_FORMS_NS}}}x", {"type": form_type})
    ET.SubElement(form, f"{{{DATA_FORMS_NS}}}title").text = title
    if instructions:
        ET.SubElement(form, f"{{{DATA_FORMS_NS}}}instructions").text = instructions
    for spec in fields:
        attrs = {"var": spec.var, "type": spec.type}
        if spec.label:
            attrs["label"] = spec.label
        field = ET.SubElement(form, f"{{{DATA_FORMS_NS}}}field", attrs)
        if spec.desc:
            ET.SubElement(field, f"{{{DATA_FORMS_NS}}}desc").text = spec.desc
        if spec.required:
            ET.SubElement(field, f"{{{DATA_FORMS_NS}}}required")
        for value in spec.values:
            ET.SubElement(field, f"{{{DATA_FORMS_NS}}}value").text = value
    return form
