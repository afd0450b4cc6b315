"""The catalogue of ATMPs regulators have already approved, and finding those products by name.

Every feed entry is checked against it: an entry that names a product the regulator has already approved is news
about a known product (a new indication, a safety notice, a withdrawal), not a new approval, and a product that one
regulator has approved can be reported as "approved elsewhere" when another regulator acts on it.

Names are compared after folding case, accents and punctuation, because feeds write the same product as
"KYMRIAH®", "Kymriah's" or "onasemnogene abeparvovec" (without the FDA suffix the label carries).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from monitor.config import ConfigError, describe_validation_error, read_entries
from monitor.models import Product

MODALITIES = ("gene_therapy", "gene_modified_cell_therapy", "cell_therapy", "tissue_engineered", "combined_atmp")
SUBMODALITIES = (
    "aav", "adenovirus", "hsv", "lentiviral", "gamma_retroviral", "crispr",
    "car_t", "t_cell", "til", "apc", "msc", "islet", "cord_blood",
    "chondrocyte", "keratinocyte", "keratinocyte_melanocyte", "fibroblast", "limbal_stem_cell", "thymus",
)

# Shorter names are left out of text search: two or three letters match too much unrelated text.
MIN_SEARCH_KEY_LENGTH = 4

_FDA_SUFFIX = re.compile(r"^(?P<core>.*[^\s-])-[a-z]{4}$")
_TRADEMARKS = str.maketrans(dict.fromkeys("®™℠©", " "))
_NON_WORD = re.compile(r"[\W_]+")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def normalise(text: str) -> str:
    """Lower-case words separated by single spaces, so that spelling variants of a name compare equal.

    Trademark signs go first (NFKD would turn ™ into the letters "TM"), accents are dropped, and a space goes
    between letters and digits so that "CTX001", "CTX-001" and "CTX 001" agree.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRADEMARKS))
    folded = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    return _LETTER_DIGIT.sub(" ", _NON_WORD.sub(" ", folded)).strip()


def name_key(name: str) -> str:
    """The form two names are compared in: `normalise` without spaces, so "exa-cel" and "exacel" agree."""
    return normalise(name).replace(" ", "")


def without_fda_suffix(name: str) -> str | None:
    """The core name of an FDA proper name ("onasemnogene abeparvovec-xioi" → "onasemnogene abeparvovec").

    FDA appends a meaningless four-letter suffix to biologics' proper names; other regulators, news and most
    press releases use the core name alone. None when the name has no such suffix.
    """
    match = _FDA_SUFFIX.match(name.strip())
    return match.group("core") if match else None


def product_names(product: Product) -> list[str]:
    """Every name the product can be recognised by, the trade name first."""
    names = [product.trade_name]
    for name in (product.proper_name, *product.aliases):
        if name:
            names.append(name)
            core = without_fda_suffix(name)
            if core:
                names.append(core)
    return names


def _same_regulator(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


class Catalogue:
    """Approved products with an index of their names, for exact look-ups and for scanning free text.

    A name shared by several products of one regulator (all FDA cord blood licences are "HPC, Cord Blood")
    does not identify a product, so `lookup` and `find_in_text` ignore it for that regulator; `regulators_of`
    still counts it, because the regulator has approved something of that name.
    """

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._products: list[Product] = []
        self._by_key: dict[str, list[int]] = {}
        self._trade_names: set[tuple[str, str]] = set()
        self._search_names: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for product in products:
            self.add(product)

    def __len__(self) -> int:
        return len(self._products)

    def add(self, product: Product) -> bool:
        """Add a product; False (and nothing changes) if its regulator already has one of that trade name.

        Returning rather than raising lets a caller merge the baseline with products learned later, the
        baseline's entry winning.
        """
        trade = (product.regulator.casefold(), name_key(product.trade_name))
        if trade in self._trade_names:
            return False
        self._trade_names.add(trade)
        position = len(self._products)
        self._products.append(product)
        for name in product_names(product):
            key = name_key(name)
            if not key:
                continue
            positions = self._by_key.setdefault(key, [])
            if position not in positions:
                positions.append(position)
            if len(key) >= MIN_SEARCH_KEY_LENGTH:
                self._search_names.add(normalise(name))
        self._pattern = None
        return True

    def products(self, regulator: str | None = None) -> list[Product]:
        return [p for p in self._products if regulator is None or _same_regulator(p.regulator, regulator)]

    def lookup(self, name: str, regulator: str | None = None) -> Product | None:
        """The product this exact name identifies, or None.

        Without a regulator a name approved by several (Kymriah: FDA and EMA) gives the earliest approval,
        so that the answer does not depend on the order of the catalogue file.
        """
        found = self._identified(name_key(name), regulator)
        if not found:
            return None
        return min(found, key=lambda p: (p.approval_date is None, p.approval_date or date.min))

    def regulators_of(self, name: str) -> set[str]:
        return {self._products[i].regulator for i in self._by_key.get(name_key(name), ())}

    def find_in_text(self, text: str, regulator: str | None = None) -> list[Product]:
        """Every product named in `text`, once each, in order of first mention.

        The result holds catalogue items, so without a regulator a product that both FDA and EMA approved
        comes once per regulator.

        Names are matched as whole words of the normalised text, so "Kymriah's" and "KYMRIAH®" count and
        "Provengeful" does not. One regular expression built from a trie of all names scans the text once,
        which keeps the cost per entry flat as the catalogue grows.
        """
        pattern = self._compiled()
        if pattern is None:
            return []
        seen: set[int] = set()
        found: list[Product] = []
        for match in pattern.finditer(normalise(text)):
            for position in self._identified_positions(match.group().replace(" ", ""), regulator):
                if position not in seen:
                    seen.add(position)
                    found.append(self._products[position])
        return found

    def _identified(self, key: str, regulator: str | None) -> list[Product]:
        return [self._products[i] for i in self._identified_positions(key, regulator)]

    def _identified_positions(self, key: str, regulator: str | None) -> list[int]:
        """Positions of the products `key` names, leaving out regulators for which it names more than one."""
        per_regulator: dict[str, list[int]] = {}
        for position in self._by_key.get(key, ()):
            owner = self._products[position].regulator
            if regulator is None or _same_regulator(owner, regulator):
                per_regulator.setdefault(owner.casefold(), []).append(position)
        return sorted(positions[0] for positions in per_regulator.values() if len(positions) == 1)

    def _compiled(self) -> re.Pattern[str] | None:
        """The search expression, rebuilt on first use after an `add`, so that loading many products costs one build."""
        if self._pattern is None and self._search_names:
            self._pattern = re.compile(rf"(?<!\w)(?:{_trie_pattern(self._search_names)})(?!\w)")
        return self._pattern


def _trie_pattern(names: Iterable[str]) -> str:
    """A regular expression matching exactly `names` (normalised), sharing prefixes so that a scan stays fast.

    A space in a name may be absent in the text ("exa cel" also matches "exacel"), as `name_key` ignores spaces.
    """
    trie: dict[str, dict] = {}
    for name in names:
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}
    return _render(trie)


def _render(node: dict[str, dict]) -> str:
    branches = [(" ?" if char == " " else re.escape(char)) + _render(child)
                for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Greedy: the longest name wins, a shorter one ending here is the fallback.
    return f"(?:{body})?" if "" in node else body


def _iso_date(value: Any) -> date:
    """A date written as YYYY-MM-DD, quoted or not; other forms are refused rather than guessed."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"not a date: {value!r} ({exc})") from None
    raise ValueError(f"not a date: {value!r} (use YYYY-MM-DD)")


def _has_letters(name: str) -> str:
    if not name_key(name):
        raise ValueError(f"not a usable name: {name!r}")
    return name


Name = Annotated[str, Field(min_length=1), AfterValidator(_has_letters)]
Text = Annotated[str, Field(min_length=1)]


class ProductEntry(BaseModel):
    """One item of `baseline.yaml`; unknown keys are refused so that a misspelt field is not silently lost."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    regulator: str = Field(pattern=r"^[A-Z][A-Z0-9-]*$", max_length=32)
    trade_name: Name
    proper_name: Name | None = None
    aliases: list[Name] = Field(default_factory=list)
    sponsor: Text | None = None
    approval_date: Annotated[date, BeforeValidator(_iso_date)] | None = None
    indication: Text | None = None
    modality: Literal[MODALITIES] | None = None
    submodality: Literal[SUBMODALITIES] | None = None
    note: Text | None = None

    def to_product(self) -> Product:
        return Product(
            regulator=self.regulator, trade_name=self.trade_name, proper_name=self.proper_name,
            aliases=tuple(self.aliases), sponsor=self.sponsor, approval_date=self.approval_date,
            indication=self.indication, modality=self.modality, submodality=self.submodality, note=self.note,
        )


def load_baseline(path: Path) -> list[Product]:
    """The products listed in a baseline file, all checked before any is returned."""
    products: list[Product] = []
    seen: dict[tuple[str, str], int | None] = {}
    for position, (line, raw) in enumerate(read_entries(path, "products"), start=1):
        name = raw.get("trade_name")
        label = f"product {name!r}" if isinstance(name, str) and name.strip() else f"product #{position}"
        try:
            entry = ProductEntry.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(path, describe_validation_error(exc), line=line, entry=label) from None
        identity = (entry.regulator, name_key(entry.trade_name))
        if identity in seen:
            raise ConfigError(path, f"duplicate {entry.regulator} product (first defined on line {seen[identity]})",
                              line=line, entry=label)
        seen[identity] = line
        products.append(entry.to_product())
    return products
