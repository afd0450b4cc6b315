from dataclasses import replace
from datetime import UTC, datetime

from monitor.diff import Seen, SeenIndex, diff_entries, event_identity, link_hash, title_date_hash
from monitor.models import Entry

APPROVAL = Entry(
    source_id="fda-press",
    key="guid:fda-2023-12-08-casgevy",
    guid="fda-2023-12-08-casgevy",
    link="https://www.fda.gov/news-events/press-announcements/fda-approves-first-gene-therapies-sickle-cell",
    title="FDA Approves First Gene Therapies to Treat Patients with Sickle Cell Disease",
    summary="Casgevy and Lyfgenia approved.",
    published=datetime(2023, 12, 8, 14, 0, tzinfo=UTC),
    updated=None,
    categories=(),
    fingerprint="f1",
)


def remembered(entry: Entry, entry_id: int = 1) -> SeenIndex:
    seen = Seen(entry_id=entry_id, key=entry.key, fingerprint=entry.fingerprint, event_id=10)
    index = SeenIndex(by_key={entry.key: seen}, by_title_date={title_date_hash(entry): seen})
    if entry.link:
        index.by_link[link_hash(entry)] = seen
    return index


def test_an_unknown_entry_is_new():
    (change,) = diff_entries([APPROVAL], SeenIndex())
    assert change.kind == "new"
    assert change.previous is None


def test_the_same_entry_again_is_seen():
    (change,) = diff_entries([APPROVAL], remembered(APPROVAL))
    assert change.kind == "seen"
    assert not change.rekeyed


def test_an_edited_entry_is_updated_not_new():
    edited = replace(APPROVAL, summary="Casgevy and Lyfgenia approved; corrected.", fingerprint="f2")
    (change,) = diff_entries([edited], remembered(APPROVAL))
    assert change.kind == "updated"
    assert change.previous.entry_id == 1


def test_a_new_guid_on_the_same_link_is_a_republication():
    republished = replace(APPROVAL, key="guid:new-cms-id", guid="new-cms-id")
    (change,) = diff_entries([republished], remembered(APPROVAL))
    assert change.kind == "seen"
    assert change.rekeyed


def test_a_new_guid_and_link_with_the_same_title_and_day_is_a_republication():
    republished = replace(APPROVAL, key="guid:other", guid="other", link="https://www.fda.gov/moved/casgevy",
                          published=APPROVAL.published.replace(hour=18))
    (change,) = diff_entries([republished], remembered(APPROVAL))
    assert change.kind == "seen"


def test_same_title_on_another_day_is_a_different_item():
    next_year = replace(APPROVAL, key="guid:other", guid="other", link=None,
                        published=datetime(2024, 12, 8, tzinfo=UTC))
    (change,) = diff_entries([next_year], remembered(replace(APPROVAL, link=None)))
    assert change.kind == "new"


def test_repeats_inside_one_feed_count_once():
    twice = [APPROVAL, replace(APPROVAL, key="guid:dup", guid="dup")]
    assert [c.kind for c in diff_entries(twice, SeenIndex())] == ["new"]


def test_event_identity_prefers_the_link_and_falls_back_to_title_and_day():
    assert event_identity(APPROVAL).startswith("link:")
    assert event_identity(replace(APPROVAL, source_id="fda-cber")) == event_identity(APPROVAL)
    linkless = replace(APPROVAL, link=None)
    assert event_identity(linkless) == f"title:{title_date_hash(linkless)}"
    spaced = replace(linkless, title="  FDA approves FIRST gene therapies to treat patients with sickle cell disease ")
    assert event_identity(spaced) == event_identity(linkless)
