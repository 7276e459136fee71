"""Contacts, segments and senders: who the account writes to, and from whom."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from incomaker_elt.standin.calendar import DAY, HORIZON_END_TS, HORIZON_START_TS
from incomaker_elt.standin.generation import MISSING, Columns, pick
from incomaker_elt.standin.money import COUNTRIES, COUNTRY_CURRENCY
from incomaker_elt.standin.scales import Scale

COUNTRY_WEIGHTS = (0.45, 0.15, 0.05, 0.08, 0.10, 0.08, 0.03, 0.06)
HOME_LANGUAGE = {
    "CZ": "cs",
    "SK": "sk",
    "AT": "de",
    "DE": "de",
    "HU": "hu",
    "RO": "ro",
    "CH": "de",
    "PL": "pl",
}
LANGUAGES = ("cs", "sk", "en", "de", "hu", "ro", "pl")
GENDERS = ("M", "F", "U")

FIRST_NAMES = {
    ("cs", "M"): ["Jan", "Petr", "Tomáš", "Jiří", "Martin", "Lukáš", "Jakub", "Pavel"],
    ("cs", "F"): ["Jana", "Eva", "Lucie", "Tereza", "Petra", "Kateřina", "Markéta", "Lenka"],
    ("sk", "M"): ["Ján", "Peter", "Michal", "Marek", "Juraj", "Martin", "Tomáš", "Lukáš"],
    ("sk", "F"): ["Zuzana", "Mária", "Katarína", "Lucia", "Jana", "Veronika", "Simona", "Ivana"],
    ("de", "M"): ["Lukas", "Felix", "Jonas", "Maximilian", "Paul", "Leon", "Stefan", "Tobias"],
    ("de", "F"): ["Anna", "Lena", "Sophie", "Laura", "Julia", "Hannah", "Katrin", "Sabine"],
    ("hu", "M"): ["Bence", "Máté", "Dávid", "Levente", "Gábor", "Zoltán", "Péter", "László"],
    ("hu", "F"): ["Anna", "Eszter", "Réka", "Zsófia", "Katalin", "Noémi", "Ildikó", "Judit"],
    ("ro", "M"): ["Andrei", "Mihai", "Alexandru", "Ionuț", "Cristian", "Vlad", "Radu", "Florin"],
    ("ro", "F"): ["Maria", "Elena", "Ioana", "Andreea", "Ana", "Cristina", "Alina", "Diana"],
    ("pl", "M"): ["Piotr", "Krzysztof", "Tomasz", "Paweł", "Michał", "Jakub", "Marcin", "Adam"],
    ("pl", "F"): ["Anna", "Katarzyna", "Magdalena", "Agnieszka", "Joanna", "Ewa", "Zofia", "Ola"],
    ("en", "M"): ["James", "John", "Oliver", "Harry", "George", "Jack", "Daniel", "Thomas"],
    ("en", "F"): ["Emma", "Olivia", "Amelia", "Isla", "Emily", "Grace", "Sophie", "Chloe"],
}
LAST_NAMES = {
    "cs": ["Novák", "Svoboda", "Novotný", "Dvořák", "Černý", "Procházka", "Kučera", "Veselý"],
    "sk": ["Horváth", "Kováč", "Varga", "Tóth", "Nagy", "Baláž", "Szabó", "Molnár"],
    "de": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"],
    "hu": ["Nagy", "Kovács", "Tóth", "Szabó", "Horváth", "Varga", "Kiss", "Molnár"],
    "ro": ["Popescu", "Ionescu", "Popa", "Stan", "Dumitru", "Stoica", "Gheorghe", "Matei"],
    "pl": ["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Lewandowski", "Zieliński"],
    "en": ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies"],
}
MAIL_DOMAINS = ("example.com", "mail.example", "post.example", "inbox.example")
INVALID_REASONS = ("empty", "digits", "placeholder")
PLACEHOLDER_NAMES = ("Test", "xxx", "N/A", "asdf")
SEGMENT_NAMES = (
    "Newsletter subscribers",
    "Loyal customers",
    "New this month",
    "Discount hunters",
    "VIP",
    "Lapsed buyers",
    "Mobile openers",
    "Gift buyers",
    "Sports fans",
    "Home & garden",
    "Fashion lovers",
    "Parents",
    "Students",
    "B2B buyers",
    "Weekend shoppers",
)
SENDERS = (
    ("Shop Team", "team@shop.example", True),
    ("Newsletter", "news@shop.example", True),
    ("Customer Care", "care@shop.example", True),
    ("Deals", "deals@shop.example", False),
)


@dataclass(frozen=True)
class Audience:
    contacts: Columns
    segments: Columns
    segment_members: Columns
    senders: Columns
    # Contact ids per segment, ascending; since ids follow creation time, the members who existed
    # at a moment are a prefix of the array.
    members_by_segment: list[np.ndarray]


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _contacts(rng: np.random.Generator, n: int) -> Columns:
    # A third of the list arrives as an import in the first month; the rest sign up steadily.
    imported = rng.random(n) < 0.3
    span = HORIZON_END_TS - HORIZON_START_TS
    created = np.where(
        imported,
        HORIZON_START_TS + rng.integers(0, 31 * DAY, n),
        HORIZON_START_TS + rng.integers(0, span, n),
    )
    created.sort()  # ids follow creation time
    ids = np.arange(1, n + 1, dtype=np.int64)

    country = np.asarray(COUNTRIES, dtype=object)[rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS)]
    home = np.array([HOME_LANGUAGE[c] for c in country], dtype=object)
    language = np.where(rng.random(n) < 0.1, "en", home).astype(object)
    gender = np.asarray(GENDERS, dtype=object)[rng.choice(3, n, p=(0.45, 0.48, 0.07))]
    first_pick = rng.integers(0, 8, n)
    last_pick = rng.integers(0, 64, n)
    domain = pick(rng, MAIL_DOMAINS, n)
    first, last, email = [], [], []
    for i in range(n):
        lang = language[i]
        # Unknown gender still has a name; take one from either list.
        g = gender[i] if gender[i] != "U" else ("M", "F")[first_pick[i] % 2]
        fn = FIRST_NAMES[(lang, g)][first_pick[i]]
        names = LAST_NAMES[lang]
        ln = names[last_pick[i] % len(names)]
        first.append(fn)
        last.append(ln)
        email.append(f"{_ascii(fn)}.{_ascii(ln)}.{i + 1}@{domain[i]}")
    first = np.array(first, dtype=object)
    last = np.array(last, dtype=object)
    email = np.array(email, dtype=object)

    invalid = rng.random(n) < 0.02
    reason = np.full(n, None, dtype=object)
    reason[invalid] = pick(rng, INVALID_REASONS, int(invalid.sum()))
    for i in np.flatnonzero(invalid):
        if reason[i] == "empty":
            first[i], last[i] = "", ""
        elif reason[i] == "digits":
            first[i], last[i] = str(rng.integers(100, 99_999)), ""
        else:
            first[i] = last[i] = PLACEHOLDER_NAMES[i % len(PLACEHOLDER_NAMES)]
        email[i] = f"user{i + 1}@{domain[i]}"

    # Duplicates re-register an earlier, original contact's e-mail address.
    duplicate = rng.random(n) < 0.02
    duplicate[:10] = False
    originals = np.flatnonzero(~duplicate)
    duplicate_of = np.full(n, MISSING, dtype=np.int64)
    dup_idx = np.flatnonzero(duplicate)
    earlier = np.searchsorted(originals, dup_idx)  # originals created before each duplicate
    chosen = originals[(rng.random(len(dup_idx)) * earlier).astype(np.int64)]
    duplicate_of[dup_idx] = ids[chosen]
    email[dup_idx] = email[chosen]

    # Some unsubscribe through the preference centre, not from an e-mail; the mailing generator
    # adds unsubscribes from e-mails and settles each contact's unsubscribedAt.
    leaves = rng.random(n) < 0.04
    left_at = created + (rng.random(n) * (HORIZON_END_TS + 60 * DAY - created)).astype(np.int64)
    planned_unsubscribe = np.where(leaves, left_at, MISSING)
    return {
        "contact_id": ids,
        "email": email,
        "first_name": first,
        "last_name": last,
        "language": language,
        "gender": gender,
        "country": country,
        "currency": np.array([COUNTRY_CURRENCY[c] for c in country], dtype=object),
        "created_at": created,
        "planned_unsubscribe_at": planned_unsubscribe,
        "duplicate_of": duplicate_of,
        "invalid_reason": reason,
    }


def _segments(
    rng: np.random.Generator,
    contacts: Columns,
    n_segments: int,
    target_sends: int,
    n_campaigns: int,
) -> tuple[Columns, Columns, list[np.ndarray]]:
    n = len(contacts["contact_id"])
    ids = np.arange(1, n_segments + 1, dtype=np.int64)
    names = [SEGMENT_NAMES[i % len(SEGMENT_NAMES)] for i in range(n_segments)]
    names = [
        nm if i < len(SEGMENT_NAMES) else f"{nm} {i // len(SEGMENT_NAMES) + 1}"
        for i, nm in enumerate(names)
    ]
    # The first few segments exist from the start, so early campaigns have someone to target.
    created = np.where(
        ids <= 3,
        HORIZON_START_TS + rng.integers(0, 5 * DAY, n_segments),
        HORIZON_START_TS + rng.integers(0, 300 * DAY, n_segments),
    )
    # About 65 % of the list exists at an average campaign; size segments to hit the send target.
    share = target_sends / (n_campaigns * 0.65 * n)
    members: list[np.ndarray] = []
    for _ in range(n_segments):
        s = min(0.9, share * rng.uniform(0.5, 1.5))
        members.append(contacts["contact_id"][rng.random(n) < s])
    seg_col = np.concatenate(
        [np.full(len(m), i + 1, dtype=np.int64) for i, m in enumerate(members)]
    )
    segments = {"segment_id": ids, "name": np.array(names, dtype=object), "created_at": created}
    membership = {"segment_id": seg_col, "contact_id": np.concatenate(members)}
    return segments, membership, members


def generate_audience(rng: np.random.Generator, scale: Scale) -> Audience:
    contacts = _contacts(rng, scale.contacts)
    segments, membership, members = _segments(
        rng, contacts, scale.segments, scale.campaign_sends, scale.campaigns
    )
    senders = {
        "sender_id": np.arange(1, len(SENDERS) + 1, dtype=np.int64),
        "name": np.array([s[0] for s in SENDERS], dtype=object),
        "email": np.array([s[1] for s in SENDERS], dtype=object),
        "verified": np.array([s[2] for s in SENDERS], dtype=bool),
    }
    return Audience(contacts, segments, membership, senders, members)
