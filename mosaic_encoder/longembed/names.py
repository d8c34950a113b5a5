"""People's names for the synthetic tasks: a given name and a family name, drawn without repeats.

The lists are uncommon names, so that a name hardly ever occurs in a haystack; the needle task
leaves out every name part that does occur in its haystack all the same.
"""

from __future__ import annotations

import random
from collections.abc import Set

from ..errors import InputError

GIVEN = (
    "Adela", "Anselm", "Bertram", "Briony", "Cosima", "Cato", "Delphine", "Dorian", "Elowen",
    "Evander", "Fleur", "Florian", "Greta", "Gideon", "Honora", "Hamish", "Imogen", "Ignatius",
    "Juno", "Jasper", "Kestrel", "Kasimir", "Linnea", "Leander", "Mirela", "Magnus", "Niamh",
    "Oswin", "Orla", "Perpetua", "Piers", "Quilla", "Rosalind", "Rhodri", "Sabine", "Soren",
    "Tamsin", "Thaddeus", "Ulrike", "Ulric", "Veda", "Valentin", "Wilhelmina", "Wystan",
    "Xanthe", "Yorick", "Zinnia", "Zebedee",
)
FAMILY = (
    "Abernathy", "Ashcombe", "Blackwood", "Brightwater", "Carrow", "Castellan", "Drummond",
    "Dunmore", "Ellery", "Everard", "Fairweather", "Fenwick", "Galloway", "Greenhalgh",
    "Hartigan", "Hollis", "Ingleby", "Ingram", "Jardine", "Jessop", "Kettering", "Kilbride",
    "Lindqvist", "Lockwood", "Marchetti", "Merriman", "Nakamura", "Northcott", "Oakes",
    "Okonkwo", "Pemberton", "Penhaligon", "Quarrie", "Quennell", "Rasmussen", "Rushworth",
    "Stainforth", "Sorensen", "Thackeray", "Trevelyan", "Underhill", "Urquhart", "Vance",
    "Vasquez", "Wetherby", "Whitlock", "Yardley", "Zeller",
)


def distinct_names(rng: random.Random, count: int, excluded: Set[str] = frozenset()) -> list[str]:
    """``count`` different full names ("Given Family"), none with a part whose lower case is in
    ``excluded``.

    Raises:
        InputError: fewer than ``count`` names are left.
    """
    given = [name for name in GIVEN if name.lower() not in excluded]
    family = [name for name in FAMILY if name.lower() not in excluded]
    if len(given) * len(family) < count:
        raise InputError(f"only {len(given) * len(family)} names are not words of the haystack, "
                         f"fewer than the {count} documents; use another haystack.")
    picks = rng.sample(range(len(given) * len(family)), count)
    return [f"{given[p // len(family)]} {family[p % len(family)]}" for p in picks]
