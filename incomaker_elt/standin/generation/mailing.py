"""E-mail: campaigns, smartflow deliveries, their sends and the recipients' activity.

Also settles each contact's unsubscribe: the earliest of an unsubscribe from an e-mail and one
through the preference centre; nobody is sent anything after unsubscribing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from incomaker_elt.standin.calendar import DAY, HORIZON_DAYS, HORIZON_START_TS, HOUR
from incomaker_elt.standin.generation import MISSING, Columns, run_positions
from incomaker_elt.standin.generation.audience import LANGUAGES, Audience
from incomaker_elt.standin.scales import Scale

EVENT_TYPES = ("sent", "delivered", "bounced", "opened", "clicked", "unsubscribed")
SENT, DELIVERED, BOUNCED, OPENED, CLICKED, UNSUBSCRIBED = range(6)
ACTIVITY_WINDOW = 7 * DAY  # events happen up to 7 days after the send
LANGUAGE_WEIGHTS = (0.45, 0.15, 0.12, 0.12, 0.06, 0.05, 0.05)

SUBJECTS = (
    "Spring sale starts now",
    "Only today: free shipping",
    "New arrivals you will love",
    "Your weekend picks",
    "Last chance: 20 % off",
    "Back in stock",
    "Our best sellers this month",
    "A gift for you",
    "Summer essentials",
    "Black Friday preview",
)
SMARTFLOWS = (
    ("Welcome series", ("Welcome", "Getting started", "Your first discount")),
    ("Abandoned cart", ("You left something behind", "Still thinking?")),
    ("Win-back", ("We miss you", "A little something to come back")),
    ("Post-purchase", ("Thank you for your order", "How do you like it?", "Care tips")),
    ("Birthday", ("Happy birthday!",)),
    ("Browse abandonment", ("Still looking?", "Picked for you")),
    ("Replenishment", ("Time to restock?",)),
    ("VIP programme", ("Welcome to VIP", "Early access")),
)
LINK_PATHS = ("sale", "new", "bestsellers", "gift-ideas", "outlet", "blog/tips", "account", "cart")


@dataclass(frozen=True)
class Mailing:
    campaigns: Columns
    deliveries: Columns
    sends: Columns
    events: Columns
    # contact unsubscribe settled from e-mail and preference-centre unsubscribes
    unsubscribed_at: np.ndarray
    unsubscribe_send_idx: np.ndarray  # index into sends, or -1 when not from an e-mail


def _links(
    rng: np.random.Generator, prefix: str, ids: np.ndarray, lo: int, hi: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each campaign or delivery links to a few pages; urls carry its own utm tag."""
    urls: list[str] = []
    offset = np.zeros(len(ids), dtype=np.int64)
    count = rng.integers(lo, hi + 1, len(ids))
    for i, source in enumerate(ids):
        offset[i] = len(urls)
        paths = rng.choice(len(LINK_PATHS), count[i], replace=False)
        urls.extend(
            f"https://shop.example.com/{LINK_PATHS[p]}?utm_source=incomaker&utm_campaign={prefix}{source}"
            for p in paths
        )
    return urls, offset, count


def _campaigns(rng: np.random.Generator, n: int, audience: Audience) -> Columns:
    days = np.sort(rng.choice(np.arange(9, HORIZON_DAYS - 1), n, replace=False))
    sent_at = HORIZON_START_TS + days * DAY + rng.integers(8 * HOUR, 18 * HOUR, n)
    seg_created = audience.segments["created_at"]
    # A campaign targets a segment that already exists.
    segment = np.empty(n, dtype=np.int64)
    for i, t in enumerate(sent_at):
        existing = np.flatnonzero(seg_created < t)
        segment[i] = existing[rng.integers(0, len(existing))] + 1
    subject_idx = rng.integers(0, len(SUBJECTS), n)
    ab = rng.random(n) < 0.25
    ab_id = np.where(ab, np.cumsum(ab), MISSING)
    ids = np.arange(1, n + 1, dtype=np.int64)
    months = np.asarray(sent_at, dtype="datetime64[s]").astype("datetime64[M]").astype(str)
    return {
        "campaign_id": ids,
        "name": np.array(
            [f"Newsletter {m} #{i}" for m, i in zip(months, ids, strict=True)], dtype=object
        ),
        "subject": np.asarray(SUBJECTS, dtype=object)[subject_idx],
        "subject_b": np.where(
            ab, np.asarray(SUBJECTS, dtype=object)[(subject_idx + 3) % len(SUBJECTS)], None
        ).astype(object),
        "language": np.asarray(LANGUAGES, dtype=object)[
            rng.choice(len(LANGUAGES), n, p=LANGUAGE_WEIGHTS)
        ],
        "sender_id": rng.integers(1, len(audience.senders["sender_id"]) + 1, n),
        "segment_id": segment,
        "sent_at": sent_at,
        "ab_test_id": ab_id,
        "open_rate": rng.uniform(0.25, 0.45, n),
    }


def _deliveries(rng: np.random.Generator, n_flows: int, n_senders: int) -> Columns:
    rows = []
    for f in range(n_flows):
        name, steps = SMARTFLOWS[f % len(SMARTFLOWS)]
        flow_name = name if f < len(SMARTFLOWS) else f"{name} {f // len(SMARTFLOWS) + 1}"
        for step, subject in enumerate(steps, start=1):
            rows.append((f + 1, flow_name, f"{flow_name} - step {step}", subject))
    n = len(rows)
    created = np.sort(HORIZON_START_TS + rng.integers(0, 360 * DAY, n))
    retired = np.where(
        rng.random(n) < 0.2, created + rng.integers(120 * DAY, 600 * DAY, n), MISSING
    )
    return {
        "delivery_id": np.arange(1, n + 1, dtype=np.int64),
        "smartflow_id": np.array([r[0] for r in rows], dtype=np.int64),
        "smartflow_name": np.array([r[1] for r in rows], dtype=object),
        "name": np.array([r[2] for r in rows], dtype=object),
        "subject": np.array([r[3] for r in rows], dtype=object),
        "language": np.asarray(LANGUAGES, dtype=object)[
            rng.choice(len(LANGUAGES), n, p=LANGUAGE_WEIGHTS)
        ],
        "sender_id": rng.integers(1, n_senders + 1, n),
        "created_at": created,
        "retired_at": retired,
        "open_rate": rng.uniform(0.25, 0.5, n),
    }


def _campaign_sends(
    rng: np.random.Generator, campaigns: Columns, audience: Audience, contact_created: np.ndarray
) -> Columns:
    contact, campaign, at = [], [], []
    for i, (seg, t) in enumerate(zip(campaigns["segment_id"], campaigns["sent_at"], strict=True)):
        members = audience.members_by_segment[seg - 1]
        # contact ids follow creation time: members who existed at send time are a prefix
        existed = members[: np.searchsorted(members, np.searchsorted(contact_created, t), "right")]
        contact.append(existed)
        campaign.append(np.full(len(existed), i + 1, dtype=np.int64))
        # sending a campaign takes up to half an hour
        at.append(t + rng.integers(0, 1_800, len(existed)))
    campaign_id = np.concatenate(campaign)
    ab = campaigns["ab_test_id"][campaign_id - 1] != MISSING
    variant = np.where(ab, np.where(rng.random(len(ab)) < 0.5, "A", "B"), None).astype(object)
    return {
        "campaign_id": campaign_id,
        "delivery_id": np.full(len(campaign_id), MISSING, dtype=np.int64),
        "contact_id": np.concatenate(contact),
        "sent_at": np.concatenate(at),
        "variant": variant,
    }


def _delivery_sends(
    rng: np.random.Generator, deliveries: Columns, target: int, contact_created: np.ndarray
) -> Columns:
    first = (deliveries["created_at"] - HORIZON_START_TS) // DAY + 1
    retired = deliveries["retired_at"]
    last = np.where(
        retired == MISSING,
        HORIZON_DAYS - 1,
        np.minimum((retired - HORIZON_START_TS) // DAY - 1, HORIZON_DAYS - 1),
    )
    span = np.maximum(last - first + 1, 0)
    delivery = np.repeat(deliveries["delivery_id"], span)
    day = run_positions(span) + np.repeat(first, span)
    per_day = rng.poisson(target / max(len(delivery), 1), len(delivery))
    delivery = np.repeat(delivery, per_day)
    at = (
        HORIZON_START_TS
        + np.repeat(day, per_day) * DAY
        + rng.integers(6 * HOUR, 22 * HOUR, len(delivery))
    )
    existing = np.searchsorted(contact_created, at)  # the flow picks among existing contacts
    keep = existing > 0
    delivery, at, existing = delivery[keep], at[keep], existing[keep]
    contact = (rng.random(len(at)) * existing).astype(np.int64) + 1
    return {
        "campaign_id": np.full(len(at), MISSING, dtype=np.int64),
        "delivery_id": delivery,
        "contact_id": contact,
        "sent_at": at,
        "variant": np.full(len(at), None, dtype=object),
    }


def _activity(
    rng: np.random.Generator,
    sends: Columns,
    open_rate: np.ndarray,
    link_offset: np.ndarray,
    link_count: np.ndarray,
) -> Columns:
    """Events of every send: sent, delivered or bounced, opens, clicks after an open, and
    unsubscribes."""
    n = len(sends["sent_at"])
    sent = sends["sent_at"]
    idx = np.arange(n)
    end = sent + ACTIVITY_WINDOW
    bounced = rng.random(n) < 0.03
    handed_over = sent + rng.integers(2, 300, n)
    delivered = ~bounced
    opened = delivered & (rng.random(n) < open_rate)
    first_open = handed_over + np.minimum(
        rng.exponential(8 * HOUR, n).astype(np.int64), ACTIVITY_WINDOW - 600
    )
    n_opens = np.where(opened, rng.geometric(0.55, n), 0)
    o_send = np.repeat(idx, n_opens)
    o_first = run_positions(n_opens) == 0
    o_at = np.where(
        o_first,
        first_open[o_send],
        first_open[o_send]
        + (rng.random(len(o_send)) * (end[o_send] - first_open[o_send])).astype(np.int64),
    )
    clicked = opened & (rng.random(n) < 0.3)
    n_clicks = np.where(clicked, rng.geometric(0.7, n), 0)
    c_send = np.repeat(idx, n_clicks)
    c_at = (
        first_open[c_send]
        + 1
        + (rng.random(len(c_send)) * (end[c_send] - first_open[c_send] - 1)).astype(np.int64)
    )
    c_url = link_offset[c_send] + (rng.random(len(c_send)) * link_count[c_send]).astype(np.int64)
    unsub = delivered & (rng.random(n) < 0.006)
    u_send = idx[unsub]
    u_at = handed_over[u_send] + (
        rng.random(len(u_send)) * (end[u_send] - handed_over[u_send])
    ).astype(np.int64)
    b_send, d_send = idx[bounced], idx[delivered]
    send = np.concatenate([idx, b_send, d_send, o_send, c_send, u_send])
    kind = np.concatenate(
        [
            np.full(n, SENT),
            np.full(len(b_send), BOUNCED),
            np.full(len(d_send), DELIVERED),
            np.full(len(o_send), OPENED),
            np.full(len(c_send), CLICKED),
            np.full(len(u_send), UNSUBSCRIBED),
        ]
    ).astype(np.int8)
    at = np.concatenate([sent, handed_over[b_send], handed_over[d_send], o_at, c_at, u_at])
    url = np.concatenate(
        [np.full(n + len(b_send) + len(d_send) + len(o_send), -1), c_url, np.full(len(u_send), -1)]
    )
    return {"send_idx": send, "kind": kind, "at": at, "url_idx": url}


def generate_mailing(rng: np.random.Generator, audience: Audience, scale: Scale) -> Mailing:
    contacts = audience.contacts
    contact_created = contacts["created_at"]
    campaigns = _campaigns(rng, scale.campaigns, audience)
    deliveries = _deliveries(rng, scale.smartflows, len(audience.senders["sender_id"]))
    c_urls, c_off, c_cnt = _links(rng, "c", campaigns["campaign_id"], 2, 5)
    d_urls, d_off, d_cnt = _links(rng, "d", deliveries["delivery_id"], 2, 4)
    urls = np.array(c_urls + d_urls, dtype=object)
    d_off = d_off + len(c_urls)

    cs = _campaign_sends(rng, campaigns, audience, contact_created)
    ds = _delivery_sends(rng, deliveries, scale.delivery_sends, contact_created)
    sends = {k: np.concatenate([cs[k], ds[k]]) for k in cs}
    is_campaign = sends["campaign_id"] != MISSING
    cidx = np.where(is_campaign, sends["campaign_id"] - 1, 0)
    didx = np.where(is_campaign, 0, sends["delivery_id"] - 1)
    open_rate = np.where(is_campaign, campaigns["open_rate"][cidx], deliveries["open_rate"][didx])
    link_offset = np.where(is_campaign, c_off[cidx], d_off[didx])
    link_count = np.where(is_campaign, c_cnt[cidx], d_cnt[didx])
    events = _activity(rng, sends, open_rate, link_offset, link_count)

    # Settle unsubscribes: the earliest of the preference-centre date and any e-mail unsubscribe.
    contact_idx = sends["contact_id"] - 1
    big = np.iinfo(np.int64).max
    planned = contacts["planned_unsubscribe_at"]
    unsub_at = np.where(planned == MISSING, big, planned)
    is_unsub = events["kind"] == UNSUBSCRIBED
    np.minimum.at(unsub_at, contact_idx[events["send_idx"][is_unsub]], events["at"][is_unsub])
    # Nothing is sent after unsubscribing, and nobody unsubscribes twice.
    keep_send = sends["sent_at"] < unsub_at[contact_idx]
    ev_contact = contact_idx[events["send_idx"]]
    keep_event = keep_send[events["send_idx"]] & (
        ~is_unsub | (events["at"] <= unsub_at[ev_contact])
    )
    events = {k: v[keep_event] for k, v in events.items()}

    # Number sends in time order; events follow the renumbering.
    order = np.lexsort(
        (sends["contact_id"], sends["delivery_id"], sends["campaign_id"], sends["sent_at"])
    )
    order = order[keep_send[order]]
    new_index = np.full(len(keep_send), -1, dtype=np.int64)
    new_index[order] = np.arange(len(order))
    sends = {k: v[order] for k, v in sends.items()}
    sends["send_id"] = np.arange(1, len(order) + 1, dtype=np.int64)
    events["send_idx"] = new_index[events["send_idx"]]

    # The unsubscribing send of each contact (if the unsubscribe came from an e-mail).
    unsub_send = np.full(len(contact_created), -1, dtype=np.int64)
    is_unsub = events["kind"] == UNSUBSCRIBED
    u_contact = sends["contact_id"][events["send_idx"][is_unsub]] - 1
    first = events["at"][is_unsub] == unsub_at[u_contact]
    unsub_send[u_contact[first]] = events["send_idx"][is_unsub][first]
    unsub_at = np.where(unsub_at == big, MISSING, unsub_at)

    # Event ids follow time; ties keep the order of a send's life (sent before delivered ...).
    ev_order = np.lexsort((events["kind"], events["send_idx"], events["at"]))
    events = {k: v[ev_order] for k, v in events.items()}
    s = events["send_idx"]
    url = np.where(events["url_idx"] >= 0, urls[np.maximum(events["url_idx"], 0)], None)
    event_table = {
        "event_id": np.arange(1, len(s) + 1, dtype=np.int64),
        "send_id": sends["send_id"][s],
        "campaign_id": sends["campaign_id"][s],
        "delivery_id": sends["delivery_id"][s],
        "contact_id": sends["contact_id"][s],
        "event_type": np.asarray(EVENT_TYPES, dtype=object)[events["kind"]],
        "occurred_at": events["at"],
        "url": url.astype(object),
    }
    campaigns.pop("open_rate")
    deliveries.pop("open_rate")
    return Mailing(campaigns, deliveries, sends, event_table, unsub_at, unsub_send)
