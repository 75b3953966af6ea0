"""The clean step, called directly: seeds acceptance, HTML, Markdown, normalisation, rules, config errors."""
from __future__ import annotations

import difflib
import hashlib
import re
import shutil
from pathlib import Path

import pytest
from bs4.exceptions import ParserRejectedMarkup

from textmill.tasks import clean as clean_module
from textmill.tasks.base import ConfigError
from textmill.tasks.clean import Cleaner, CleanOptions
from textmill.tasks.document import Document

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
CONFIG = ROOT / "config"
# Lines of seed 000 that are tweet embeds: 004 (a copy without embeds) does not have them.
EMBED_LINES = (
    "Astonishing footage of last night's drone attack on the Kremlin",
    "More footage from another angle",
)
FORBIDDEN = (
    "pic.twitter.com",
    "This comment contains spoilers",
    "To suggest a correction",
    "You can also highlight",
    "Comments (",
    "Puny Putin continues to dig his hole",
    "Internal attacks by Russian partisan groups",
    "@francis_scarr",
)


def make_doc(text: str, fmt: str = "text", doc_id: str = "doc") -> Document:
    return Document(id=doc_id, path=f"{doc_id}.txt", sha256="0" * 64, text=text, meta={"format": fmt})


def clean(*docs: Document, **options: object) -> list[Document]:
    step = Cleaner(CleanOptions(**options), config_dir=CONFIG)
    step.setup()
    return step.process(list(docs))


def clean_one(text: str, fmt: str = "text", **options: object) -> Document:
    return clean(make_doc(text, fmt), **options)[0]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def seeds() -> dict[str, Document]:
    paths = sorted(SEEDS.glob("*.txt"))
    assert len(paths) == 5
    docs = [make_doc(p.read_text(encoding="utf-8"), doc_id=p.name[:3]) for p in paths]
    return {doc.id: doc for doc in clean(*docs)}


# --- seeds ---------------------------------------------------------------------------------

def test_seeds_stay_ok_and_keep_format(seeds: dict[str, Document]) -> None:
    for doc in seeds.values():
        assert doc.status == "ok", (doc.id, doc.reason)
        assert doc.meta["format"] == "text"
        assert doc.steps[-1].step == "clean"


def test_leading_date_line_becomes_meta(seeds: dict[str, Document]) -> None:
    for doc_id in ("000", "001", "002", "003"):
        assert seeds[doc_id].meta["date"] == "2023-05-03"
        assert not seeds[doc_id].text.startswith("date")
        assert "2023-05-03" not in seeds[doc_id].text.split("\n")[0]
    assert "date" not in seeds["004"].meta
    assert seeds["000"].text.startswith("Russia has said Ukraine attacked the Kremlin")


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_no_boilerplate_left(seeds: dict[str, Document], needle: str) -> None:
    for doc in seeds.values():
        assert needle not in doc.text, doc.id


def test_tweet_text_before_embed_tail_is_kept(seeds: dict[str, Document]) -> None:
    lines = seeds["000"].text.split("\n")
    assert EMBED_LINES[0] in lines
    assert "The Russian authorities said they reserve the right…" in seeds["002"].text.split("\n")


def test_001_and_004_are_nearly_identical(seeds: dict[str, Document]) -> None:
    a = [line for line in seeds["001"].text.split("\n") if line]
    b = [line for line in seeds["004"].text.split("\n") if line]
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    assert only_b == set()
    assert all(line.startswith(EMBED_LINES) for line in only_a)
    assert difflib.SequenceMatcher(None, "\n".join(a), "\n".join(b)).ratio() > 0.95


def test_000_is_contained_in_001_and_004(seeds: dict[str, Document]) -> None:
    lines = [line for line in seeds["000"].text.split("\n") if line]
    paragraphs = [line for line in lines if not re.sub(r"^\W+", "", line).startswith(EMBED_LINES)]
    assert len(paragraphs) == 2
    for other in ("001", "004"):
        for paragraph in paragraphs:
            assert flat(paragraph) in flat(seeds[other].text), other


def test_paragraph_breaks_are_kept(seeds: dict[str, Document]) -> None:
    assert seeds["003"].text.count("\n\n") == 20
    assert seeds["004"].text.count("\n\n") == 16
    assert "\n\n\n" not in seeds["004"].text


# --- HTML ----------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head>
<title>Drone attack | Example News</title>
<link rel="canonical" href="https://example.com/news/drones">
<meta property="article:published_time" content="2023-05-03T09:30:00Z">
<style>p { color: red }</style><script>var tracking = "SCRIPT_TEXT";</script>
</head><body>
<header><a href="/">Example News</a> HEADER_TEXT</header>
<nav><a href="/world">World</a> <a href="/sport">Sport</a> NAV_TEXT</nav>
<div class="content">
<h1>Drones over the Kremlin</h1>
<p>First paragraph of the story, with <a href="/x">one link</a> inside a long sentence of prose.</p>
<p>Second paragraph&nbsp;keeps going with more words about what happened overnight.</p>
<ul><li><a href="/a">Related story one</a></li><li><a href="/b">Related story two</a></li>
<li><a href="/c">Related story three</a></li></ul>
<p>Third paragraph closes the article.<br>With a line break.</p>
</div>
<footer>FOOTER_TEXT <a href="/about">About us</a></footer>
<noscript>NOSCRIPT_TEXT</noscript><iframe src="/ad">IFRAME_TEXT</iframe>
</body></html>"""


def test_html_main_text_and_metadata() -> None:
    doc = clean_one(PAGE, "html")
    assert doc.status == "ok"
    for junk in ("SCRIPT_TEXT", "color: red", "HEADER_TEXT", "NAV_TEXT", "FOOTER_TEXT", "NOSCRIPT_TEXT",
                 "IFRAME_TEXT", "Related story", "About us"):
        assert junk not in doc.text
    paragraphs = doc.text.split("\n\n")
    assert paragraphs[0] == "Drones over the Kremlin"
    assert paragraphs[1] == "First paragraph of the story, with one link inside a long sentence of prose."
    assert paragraphs[2] == "Second paragraph keeps going with more words about what happened overnight."
    assert paragraphs[3] == "Third paragraph closes the article.\nWith a line break."
    assert doc.meta == {
        "format": "html",
        "title": "Drone attack | Example News",
        "url": "https://example.com/news/drones",
        "date": "2023-05-03",
    }


def test_html_link_density_is_an_option() -> None:
    kept = clean_one(PAGE, "html", link_density_max=1.0, html_extractor="textmill")
    assert "Related story one" in kept.text


def test_html_prefers_marked_article_over_sidebar_teasers() -> None:
    story = " ".join(["The article body sentence number %d is here." % i for i in range(30)])
    html = (
        "<html><body><div class='teasers'><p>Teaser one is short.</p><p>Teaser two is short.</p></div>"
        f"<article><p>{story}</p></article></body></html>"
    )
    doc = clean_one(html, "html")
    assert doc.text == story


def test_html_nested_10000_levels_does_not_crash() -> None:
    depth = 10_000
    html = "<html><body>" + "<div>" * depth + "<p>Deep text here.</p>" + "</div>" * depth + "</body></html>"
    doc = clean_one(html, "html")
    assert (doc.status, doc.text) == ("ok", "Deep text here.")


def test_html_nested_inline_10000_levels_does_not_crash() -> None:
    depth = 10_000
    html = "<html><body><p>" + "<span><a href='x'>" * depth + "deep" + "</a></span>" * depth + "</p></body></html>"
    # All of its text is link text, so the link-density rule drops it unless told otherwise.
    doc = clean_one(html, "html")
    assert (doc.status, doc.reason) == ("rejected", "empty after cleaning")
    doc = clean_one(html, "html", link_density_max=1.0)
    assert (doc.status, doc.text) == ("ok", "deep")


def test_html_with_only_furniture_is_rejected() -> None:
    doc = clean_one("<html><body><nav><a href='/'>Home</a></nav><script>x()</script></body></html>", "html")
    assert doc.status == "rejected"
    assert doc.reason == "empty after cleaning"


# --- faults: bad input is rejected, a bug fails ---------------------------------------------

def test_lone_surrogate_is_rejected_as_bad_markup() -> None:
    html = clean_one("<p>a\ud800b</p>", "html")
    markdown = clean_one("a\ud800b", "markdown")
    expected = "extraction failed: UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' " \
        "in position 4: surrogates not allowed"
    assert (html.status, html.reason) == ("rejected", f"html {expected}")
    assert (markdown.status, markdown.reason) == ("rejected", f"markdown {expected}")


def test_markup_the_parser_refuses_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(html: str, link_density_max: float) -> None:
        raise ParserRejectedMarkup("Document is empty")

    monkeypatch.setattr(clean_module, "html_to_text", refuse)
    doc = clean_one("<p>x</p>", "html")
    assert (doc.status, doc.reason) == ("rejected", "html extraction failed: ParserRejectedMarkup: Document is empty")


@pytest.mark.parametrize("fmt, target", [("html", "html_to_text"), ("markdown", "strip_markdown")])
def test_a_bug_in_extraction_raises_instead_of_rejecting(
    monkeypatch: pytest.MonkeyPatch, fmt: str, target: str
) -> None:
    def bug(*args: object) -> None:
        raise KeyError("title")

    monkeypatch.setattr(clean_module, target, bug)
    with pytest.raises(KeyError, match="title"):
        clean_one("<p>Some text.</p>", fmt)


HARBOUR = "The harbour reopened on Monday after three weeks of repairs to the sea wall."


@pytest.mark.slow
def test_a_bug_fails_the_run_and_is_not_cached_as_a_rejection(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowkit import records, run_flow, set_option

    set_option(config_copy, "run", "retry_delay_seconds = 0.05")
    (seeds_copy / "harbour.html").write_text(f"<html><body><article><p>{HARBOUR}</p></article></body></html>")
    calls = {"n": 0}

    def bug(html: str, link_density_max: float) -> None:
        calls["n"] += 1
        raise KeyError("injected bug")

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(clean_module, "html_to_text", bug)
        with pytest.raises(KeyError, match="injected bug"):
            run_flow(seeds_copy, out, config_copy)
    assert calls["n"] == 1  # a bug is not transient: no retry

    manifest = run_flow(seeds_copy, out, config_copy)
    assert manifest["steps"]["clean"]["computed"] == 6
    harbour = records(out)["harbour.html"]
    assert (harbour["status"], harbour["reason"], harbour["text"]) == ("ok", None, HARBOUR)


# --- Markdown ------------------------------------------------------------------------------

def test_markdown_markup_is_stripped() -> None:
    md = (
        "---\ntitle: Front matter title\ndate: 2023-05-03\n---\n"
        "# Drones over *Moscow* #\n\n"
        "Some **bold** and _italic_ text with a [link to source](https://example.com \"t\") and `code`.\n"
        "![a chart](chart.png)\n\n"
        "> A quoted <b>statement</b>.\n\n"
        "- first item\n- second item\n\n"
        "snake_case_name stays intact.\n"
    )
    doc = clean_one(md, "markdown")
    assert doc.text == (
        "Drones over Moscow\n\n"
        "Some bold and italic text with a link to source and code.\n\n"
        "A quoted statement.\n\n"
        "first item\nsecond item\n\n"
        "snake_case_name stays intact."
    )
    assert doc.meta == {"format": "markdown", "title": "Front matter title", "date": "2023-05-03"}



def test_markdown_is_parsed_not_pattern_matched() -> None:
    md = (
        "***All of it*** and **bold with _nested italic_ inside** stay words.\n\n"
        "See [the report][rep] and [Rep], then <https://example.com/raw>.\n\n"
        "[rep]: https://example.com/report \"Report\"\n\n"
        "Inline <span class=\"note\">HTML</span> text<br>on two lines, \\*escaped\\* stars.\n\n"
        "```python\n# a comment, not a heading\nx = 1  # inline\n```\n\n"
        "- outer item\n  - inner item\n- last item\n\n"
        "| City | Population |\n|:-----|-----------:|\n| Oslo | 0.7 million |\n\n"
        "[![build badge](badge.svg)](https://ci.example.com) Closing words.\n"
    )
    doc = clean_one(md, "markdown")
    assert doc.text == (
        "All of it and bold with nested italic inside stay words.\n\n"
        "See the report and Rep, then https://example.com/raw.\n\n"
        "Inline HTML text\non two lines, *escaped* stars.\n\n"
        "# a comment, not a heading\nx = 1 # inline\n\n"
        "outer item\ninner item\nlast item\n\n"
        "City Population\nOslo 0.7 million\n\n"
        "Closing words."
    )


def test_markdown_keeps_every_block_and_survives_deep_nesting() -> None:
    # The HTML path would drop a "sidebar" div and a link list; in Markdown they are the author's text.
    md = (
        "<div class=\"sidebar\">\nSidebar prose the author wrote.\n</div>\n\n"
        "- [One](/1)\n- [Two](/2)\n\n"
        + "> " * 60 + "Deeply quoted mail.\n"
    )
    doc = clean_one(md, "markdown")
    assert doc.text == "Sidebar prose the author wrote.\n\nOne\nTwo\n\nDeeply quoted mail."
    depth = 10_000
    deep = clean_one("<div>" * depth + "Deep text here." + "</div>" * depth, "markdown")
    assert deep.status == "ok" and deep.text == "Deep text here."


# --- normalisation -------------------------------------------------------------------------

def test_nfc_control_characters_and_whitespace() -> None:
    raw = "  Cafe\u0301\x00 au\tlait\x07\u00a0 here  \r\n\r\n\r\n\r\nSecond\u200b line\x1b.\n"
    doc = clean_one(raw)
    assert doc.text == "Caf\u00e9 au lait here\n\nSecond line."
    assert all(ch == "\n" or ch >= " " for ch in doc.text)


def test_repeated_furniture_keeps_its_first_copy_only() -> None:
    furniture = "Subscribe to our channel for more news"
    twice = "This sentence appears exactly twice here."
    raw = "\n".join(["Real opening paragraph.", furniture, "Yes", twice, "Yes", furniture, "Yes",
                     "Middle paragraph.", twice, furniture, "Closing paragraph."])
    assert clean_one(raw).text == "\n".join(["Real opening paragraph.", furniture, "Yes", twice, "Yes", "Yes",
                                             "Middle paragraph.", twice, "Closing paragraph."])
    assert clean_one(raw, repeated_line_min_count=0).text == raw


def test_photo_credits_under_each_picture_keep_one_copy() -> None:
    credit = "Photo: Damian Dovarganes, AP"
    paragraphs = [f"Paragraph {n} of the report says what happened in part {n}." for n in range(1, 5)]
    raw = "\n\n".join(f"{p}\n{credit}" for p in paragraphs)
    expected = f"{paragraphs[0]}\n{credit}\n\n" + "\n\n".join(paragraphs[1:])
    assert clean_one(raw).text == expected


SONG = """Down by the harbour the lanterns are low
The boats have gone out where the cold waters go

Sing out, sing out, the tide is turning
Carry me home while the fires are burning

My mother is waiting, the kettle is on
She counts every sail till the last one is gone

Sing out, sing out, the tide is turning
Carry me home while the fires are burning

So here is my lantern and here is my song
The night may be cold but it will not be long

Sing out, sing out, the tide is turning
Carry me home while the fires are burning"""


def test_song_keeps_its_verses_and_one_refrain() -> None:
    doc = clean_one(SONG)
    assert doc.status == "ok"
    assert doc.text == """Down by the harbour the lanterns are low
The boats have gone out where the cold waters go

Sing out, sing out, the tide is turning
Carry me home while the fires are burning

My mother is waiting, the kettle is on
She counts every sail till the last one is gone

So here is my lantern and here is my song
The night may be cold but it will not be long"""


def test_log_keeps_the_first_of_its_repeated_lines() -> None:
    raw = "\n".join([
        "2024-05-03 10:00:01 worker 7 started",
        "connection lost, retrying in 5s",
        "connection lost, retrying in 5s",
        "connection lost, retrying in 5s",
        "connection lost, retrying in 5s",
        "2024-05-03 10:00:21 worker 7 connected",
    ])
    doc = clean_one(raw)
    assert doc.status == "ok"
    assert doc.text == "\n".join([
        "2024-05-03 10:00:01 worker 7 started",
        "connection lost, retrying in 5s",
        "2024-05-03 10:00:21 worker 7 connected",
    ])


def test_table_keeps_the_first_copy_of_a_repeated_row() -> None:
    # The layout of BBC sport/190.txt: fixtures one per line, a repeated line closing each group.
    raw = "\n\n".join([
        "The three group winners join the holders for the final mini-tournament.",
        "Seychelles v South Africa", "Mauritius v Madagascar", "Winners meet in final match",
        "Mozambique v Zimbabwe", "Namibia v Botswana", "Winners meet in final match",
        "Lesotho v Malawi", "Zambia v Swaziland", "Winners meet in final match",
    ])
    doc = clean_one(raw)
    assert doc.status == "ok"
    assert doc.text == "\n\n".join([
        "The three group winners join the holders for the final mini-tournament.",
        "Seychelles v South Africa", "Mauritius v Madagascar", "Winners meet in final match",
        "Mozambique v Zimbabwe", "Namibia v Botswana", "Lesotho v Malawi", "Zambia v Swaziland",
    ])


# 21 characters of title and 41 copies of a 19-character line: the 40 later copies hold 760 of
# the 800 line characters, 95%.
MOSTLY_ONE_LINE = "\n".join(["Night shift log notes", *["No alarms reported."] * 41])


def test_document_of_one_repeated_line_is_rejected_with_the_measured_share() -> None:
    doc = clean_one(MOSTLY_ONE_LINE)
    assert doc.status == "rejected"
    assert doc.reason == "repetitive: 95% of characters are repeated lines (limit 60%)"
    assert doc.text == MOSTLY_ONE_LINE
    assert doc.steps[-1].step == "clean"


def test_repetition_limit_is_an_option() -> None:
    assert clean_one(MOSTLY_ONE_LINE, repeated_line_max_share=1.0).text == "Night shift log notes\nNo alarms reported."
    assert clean_one(MOSTLY_ONE_LINE, repeated_line_max_share=0.9).reason == (
        "repetitive: 95% of characters are repeated lines (limit 90%)"
    )
    # Exactly at the limit is kept: 20 characters of title, 3 of 4 copies of a 20-character line = 60%.
    at_limit = "\n".join(["A twenty char title.", *["Twenty characters ok"] * 4])
    doc = clean_one(at_limit)
    assert (doc.status, doc.text) == ("ok", "A twenty char title.\nTwenty characters ok")
    over = "\n".join(["A twenty char title", *["Twenty characters ok"] * 4])
    assert clean_one(over).reason == "repetitive: 60.6% of characters are repeated lines (limit 60%)"


def test_repeated_line_min_count_of_one_is_refused() -> None:
    with pytest.raises(ValueError):
        CleanOptions(repeated_line_min_count=1)


def test_empty_after_cleaning_is_rejected() -> None:
    doc = clean_one(" date 2023-05-03 \nComments (12)\nFirst!")
    assert doc.status == "rejected"
    assert doc.reason == "empty after cleaning"
    assert doc.meta["date"] == "2023-05-03"
    assert doc.steps[-1].step == "clean"


def test_inactive_documents_pass_through_unchanged() -> None:
    rejected = make_doc("Comments (1)").reject("too short")
    duplicate = make_doc("some text").evolve(status="duplicate", duplicate_of="x")
    fresh = make_doc("Kept text.")
    out = clean(rejected, duplicate, fresh)
    assert out[0] is rejected and out[1] is duplicate
    assert out[2].text == "Kept text."


# --- configuration -------------------------------------------------------------------------

def write_rules(tmp_path: Path, body: str) -> Cleaner:
    (tmp_path / "rules.toml").write_text(body, encoding="utf-8")
    return Cleaner(CleanOptions(rules="rules.toml"), config_dir=tmp_path)


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        Cleaner(CleanOptions(rules="nope.toml"), config_dir=tmp_path).setup()


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\.toml.*invalid TOML"):
        write_rules(tmp_path, "[[strip]\nname = ").setup()


def test_invalid_regex_names_the_rule(tmp_path: Path) -> None:
    step = write_rules(tmp_path, '[[drop_line]]\nname = "broken"\npattern = "(unclosed"\n')
    with pytest.raises(ConfigError, match=r"rules\.toml.*drop_line.*'broken'.*invalid regex"):
        step.setup()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[strp]]\nname = "x"\npattern = "y"\n', "unknown rule kind"),
        ('[[metadata]]\nname = "x"\npattern = "^date"\n', "named group"),
        ('[[cut_from]]\nname = "x"\npattern = ".*"\n', "empty string"),
        ('[[strip]]\npattern = "y"\n', "name"),
        ('[[strip]]\nname = "x"\npattern = "y"\nflags = "i"\n', "unknown key"),
    ],
)
def test_malformed_rules_are_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        write_rules(tmp_path, body).setup()


def test_fingerprint_follows_rules_file_contents(tmp_path: Path) -> None:
    shutil.copy(CONFIG / "boilerplate.toml", tmp_path / "boilerplate.toml")
    step = Cleaner(CleanOptions(rules="boilerplate.toml"), config_dir=tmp_path)
    before = step.fingerprint()
    assert step.fingerprint_extra() == {
        "rules_sha256": hashlib.sha256((tmp_path / "boilerplate.toml").read_bytes()).hexdigest()
    }
    with (tmp_path / "boilerplate.toml").open("a", encoding="utf-8") as fh:
        fh.write('\n[[drop_line]]\nname = "extra"\npattern = "^Extra$"\n')
    assert Cleaner(CleanOptions(rules="boilerplate.toml"), config_dir=tmp_path).fingerprint() != before
    assert Cleaner(CleanOptions(rules="boilerplate.toml", link_density_max=0.4), config_dir=tmp_path).fingerprint() != before


def test_rules_come_from_the_file(tmp_path: Path) -> None:
    step = write_rules(
        tmp_path,
        '[[metadata]]\nname = "by"\npattern = \'\'\'^By (?P<author>[A-Z][a-z]+)\\s*\'\'\'\n'
        '[[strip]]\nname = "promo"\npattern = \'\'\'\\s*\\[promo\\]\'\'\'\n',
    )
    step.setup()
    doc = step.process([make_doc("By Alice The story [promo] goes on.\nComments (3)\nStill here.")])[0]
    assert doc.meta["author"] == "Alice"
    assert doc.text == "The story goes on.\nComments (3)\nStill here."


# --- HTML main text: trafilatura checked against textmill's own extraction --------------------

ARTICLE = "".join(
    f"<p>Paragraph {i} of the report says the council voted on the new harbour wall after a long debate.</p>"
    for i in range(6)
)
ARTICLE_PAGE = f"<html><body><article><h1>Council backs harbour wall</h1>{ARTICLE}</article></body></html>"


def test_trafilatura_text_is_used_when_it_keeps_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    from textmill.tasks import main_text

    own = clean_one(ARTICLE_PAGE, "html", html_extractor="textmill").text
    words = len(own.split())
    kept = " ".join(["kept"] * (words // 2 + 1))
    monkeypatch.setattr(main_text, "trafilatura_text", lambda html, link_density_max: kept)
    assert clean_one(ARTICLE_PAGE, "html").text == kept
    short = " ".join(["short"] * (words // 2 - 1))
    monkeypatch.setattr(main_text, "trafilatura_text", lambda html, link_density_max: short)
    assert clean_one(ARTICLE_PAGE, "html").text == own
    assert clean_one(ARTICLE_PAGE, "html", fallback_share=0.0).text == short


def test_trafilatura_failing_falls_back_to_textmill(monkeypatch: pytest.MonkeyPatch) -> None:
    import trafilatura

    def broken(*args: object, **kwargs: object) -> str:
        raise ValueError("extractor bug")

    own = clean_one(ARTICLE_PAGE, "html", html_extractor="textmill")
    monkeypatch.setattr(trafilatura, "extract", broken)
    doc = clean_one(ARTICLE_PAGE, "html")
    assert (doc.status, doc.text) == ("ok", own.text)


def test_trafilatura_output_keeps_textmill_paragraphs() -> None:
    doc = clean_one(ARTICLE_PAGE, "html")
    paragraphs = doc.text.split("\n\n")
    assert paragraphs[0] == "Council backs harbour wall"
    assert len(paragraphs) == 7 and all(p.startswith("Paragraph") for p in paragraphs[1:])
