"""Validation of one job against the model catalog: which model it is (known, unvalidated or
unknown with a hint), which of its fields are request fields of that model (the rest are
template variables, typos or defaults meant for other models), and the request normalised
by ``specs.Catalog`` (its errors placed on the row, its warnings counted once)."""

from __future__ import annotations

import difflib
from typing import Any

from .. import specs
from .document import Document, Row
from .problems import Problems
from .templates import FAILED, Templates

META_FIELDS = frozenset({"name", "take", "output", "priority"})


class CatalogCheck:
    """Checks jobs of ``doc`` against ``doc.catalog`` (as the readers extended it)."""

    def __init__(self, doc: Document, problems: Problems, templates: Templates) -> None:
        self.doc = doc
        self.problems = problems
        self.templates = templates

    @property
    def catalog(self) -> specs.Catalog:
        return self.doc.catalog

    def model(self, raw: dict[str, Any], row: Row) -> str | None:
        """The job's model, or None (its problem recorded)."""
        model = self.templates.rendered(raw, "model", row)
        if not isinstance(model, str) or not model.strip():
            if model is not FAILED:
                self.problems.add(row.where, "model", "is required (set it in `defaults` or per row)", file=row.file)
            return None
        model = model.strip()
        unvalidated = self.doc.unvalidated_models
        if model in self.catalog.models and model not in unvalidated:
            return model
        if model in unvalidated:
            self.problems.warn(f"model '{model}' is not known to batchgen: its fields are sent unvalidated "
                               "(listed under `unvalidated_models`)")
            return model
        if self.doc.is_broken(model):
            return None  # its entry's problems are reported; one cause, one line
        hint = difflib.get_close_matches(model, sorted(self.catalog.models), n=1, cutoff=0.6)
        self.problems.add(row.where, "model", f"unknown model {model!r}"
                          + (f"; did you mean '{hint[0]}'?" if hint else "")
                          + " (`batchgen models` lists the catalog; add an entry with --models FILE or `models:`, "
                          "or list it under `unvalidated_models:` to send its fields unchecked)", file=row.file)
        return None

    def spec(self, model: str) -> specs.ModelSpec | None:
        """The entry ``model`` is checked against; None when its fields are sent unchecked."""
        # Listed under `unvalidated_models`: sent unchecked, even when the catalog knows it.
        return None if model in self.doc.unvalidated_models else self.catalog.get(model)

    def request_fields(self, raw: dict[str, Any], row: Row, model: str, spec: specs.ModelSpec | None,
                       used: set[str]) -> dict[str, Any] | None:
        """The fields this job sends, rendered; the rest are template variables (checked for
        typos and for being used at all). None when a field is wrong."""
        params: dict[str, Any] = {}
        bad = False
        for k in raw:
            if k == "model" or k in META_FIELDS and not (spec is not None and k in spec.fields):
                continue  # a model whose request has a `name` (sora-2-character) is sent the job's name
            if spec is None:  # an unvalidated model: every field no template uses is sent
                if k in used and k not in self.catalog.all_fields:
                    continue
            elif k not in spec.fields:
                if (spec.open and k not in used and k not in self.catalog.all_fields and k not in self.doc.matrix
                        and self.catalog.suggest(k) is None):
                    # The model's page names fields the catalog could not read: sent as given.
                    self.problems.warn(f"field '{k}' is not in the catalog entry of {model}; it is sent as given "
                                       "(check the provider's page)", row if k in row.values else None)
                elif self._not_a_field(k, raw, row, model, used):
                    bad = True
                    continue
                else:
                    continue
            value = self.templates.rendered(raw, k, row)
            if value is FAILED:
                bad = True
                continue
            params[k] = value
        return None if bad else params

    def request(self, model: str, spec: specs.ModelSpec | None, params: dict[str, Any],
                row: Row) -> dict[str, Any] | None:
        """The request sent for ``params``: normalised by the catalog (defaults filled, values
        checked), or as given for an unvalidated model. None when the catalog refuses it."""
        errs: list[tuple[str, str]] = []
        warns: list[tuple[str, str]] = []
        if spec is None:
            request = {"model": model, **{k: v for k, v in params.items() if v is not None}}
        else:
            request, errs, warns = self.catalog.normalise(model, params)
        # One row is several jobs when the matrix crosses models: say which model refuses it.
        of_model = f" (for {model})" if "model" in self.doc.matrix else ""
        for f, msg in errs:
            self.problems.add(row.where, f, msg + of_model, file=row.file)
        for f, msg in warns:
            self.problems.warn(f"{model}: field '{f}' {msg}", row)
        return None if errs else request

    def _not_a_field(self, k: str, raw: dict[str, Any], row: Row, model: str, used: set[str]) -> bool:
        """``k`` is not a request field of ``model``: fine as a template variable or a default
        meant for other models; a problem (returns True) when a row or the matrix asks for it
        or it looks like a typo of a request field."""
        doc = self.doc
        path = str(doc.path)
        if k in doc.matrix and k not in used:
            self.problems.add(f"line {doc.matrix_line}", k, f"matrix field '{k}' is not a request field of {model} "
                              "and no template uses it: every combination would make the same request", file=path)
            return True
        if k in doc.per_model.get(model, {}) and k not in used and k not in row.values:
            # Set for this model alone: never a default meant for another model.
            line = doc.per_model_lines.get(model, {}).get(k, 0)
            hint = self.catalog.suggest(k)
            self.problems.add(f"line {line}" if line else "per_model", k,
                              f"`per_model` sets '{k}' for {model}, which has no such field and no template uses it"
                              + (f"; did you mean '{hint}'?" if hint and hint != k else ""), file=path)
            return True
        if k in self.catalog.all_fields:
            if k in row.values:  # a default for another model is fine; a row asking for it is not
                self.problems.add(row.where, k, f"is not a field of {model} (fields for some models only go under "
                                  "`per_model:`)", file=row.file)
                return True
            if k in doc.defaults and k not in doc.per_model.get(model, {}):
                # Never silent: the run must not quietly render something other than asked.
                self.problems.warn(f"`defaults` field '{k}' is not a field of {model}: not sent to its jobs "
                                   "(fields for some models only belong under `per_model:`)")
            return False
        if k in used or k in doc.matrix:
            return False
        hint = self.catalog.suggest(k)
        if hint and k not in row.values and k in doc.defaults:
            # A typo under `defaults:` is reported once, at its own line, and the rows are still
            # checked (the manifest stays invalid: nothing runs until it is fixed).
            self.problems.add(f"line {doc.defaults_lines.get(k, 1)}", k, f"`defaults` field '{k}' is not a field of "
                              f"{model}; did you mean '{hint}'?", file=path)
            return False
        if hint:
            self.problems.add(row.where, k, f"is not a field of {model}; did you mean '{hint}'?", file=row.file)
            return True
        if k in row.values or k in doc.defaults:
            self.problems.warn(f"field '{k}' is not a request field of {model} and no template uses it; it is ignored",
                               row if k in row.values else None)
        return False
