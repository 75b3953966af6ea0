"""Text encodings: every decoded text is exactly the text that was written, or flagged uncertain."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CONFIG, shared_path
from flowkit import records, run_flow, set_option
from textmill.flows.config import load_config
from textmill.tasks.base import ConfigError
from textmill.tasks.document import Document
from textmill.tasks.read import discover, read_source

FRENCH = (
    "Au marché de Noël, la crème brûlée était déjà vendue à midi. Le garçon du café, très aimable, "
    "nous a expliqué que la pâtisserie fermait tôt à cause de la grève. Nous avons donc goûté une tarte "
    "aux pommes près de l'hôtel, où l'été dernier nous avions déjeuné à côté du théâtre."
)
FRENCH_CP1252 = (
    "Le chœur a chanté « Ô nuit » dans l’église ; ma sœur, émue, a pleuré. Les œuvres de Molière sont "
    "jouées à la Comédie-Française depuis des siècles, et chaque soirée réunit des spectateurs venus de "
    "très loin pour ce cœur battant du théâtre français… même en hiver."
)
GERMAN = (
    "„Wir müssen die Straße bis Freitag räumen“, sagte der Bürgermeister. Die Anwohner ärgerten sich "
    "über die Größe der Baustelle, denn schon im Frühjahr hatte die Stadt versprochen, dass die Arbeiten "
    "vor den Sommerferien abgeschlossen wären. Außerdem fehlen seitdem überall Parkplätze."
)
RUSSIAN = (
    "Вчера в Москве прошло заседание городской думы, на котором депутаты обсудили бюджет на следующий "
    "год. Особое внимание было уделено строительству новых школ и больниц, а также ремонту дорог в "
    "отдалённых районах города. Окончательное решение будет принято через неделю."
)
CZECH = (
    "Příliš žluťoučký kůň úpěl ďábelské ódy. V Praze se včera konalo zasedání městské rady, na kterém "
    "zastupitelé schválili rozpočet na příští rok. Největší část peněz půjde na opravy silnic, škol a "
    "nemocnic v okrajových čtvrtích města, řekl starosta."
)
POLISH = (
    "Wczoraj w Krakowie odbyło się posiedzenie rady miasta, na którym radni przyjęli budżet na przyszły "
    "rok. Najwięcej pieniędzy zostanie przeznaczone na remonty dróg, szkół i szpitali. Mieszkańcy "
    "zgłaszali też potrzebę budowy nowych ścieżek rowerowych wzdłuż Wisły."
)
GREEK = (
    "Χθες στην Αθήνα πραγματοποιήθηκε συνεδρίαση του δημοτικού συμβουλίου, όπου οι σύμβουλοι ενέκριναν "
    "τον προϋπολογισμό για το επόμενο έτος. Το μεγαλύτερο μέρος των χρημάτων θα διατεθεί για την "
    "επισκευή δρόμων, σχολείων και νοσοκομείων στις συνοικίες της πόλης."
)
JAPANESE = (
    "昨日、東京都議会で来年度の予算案が審議されました。議員たちは、新しい学校や病院の建設、そして郊外の道路の"
    "修理に多くの予算を充てることで合意しました。最終的な決定は来週行われる予定です。市民からは自転車専用道路の"
    "整備や、公共交通機関の充実を求める声も上がっています。専門家は、人口の減少と高齢化が進む中で、限られた"
    "予算をどのように配分するかが今後の大きな課題になると指摘しています。一方で、地域の商店街からは、工事の期間中"
    "に客足が遠のくことを心配する意見も寄せられました。"
)
CHINESE = (
    "昨天，北京市人民代表大会审议了明年的财政预算。代表们一致同意将大部分资金用于新建学校和医院，以及修缮郊区"
    "的道路。最终决定将于下周作出。市民们还希望政府能够修建更多的自行车道，并改善公共交通系统，减少交通拥堵和"
    "空气污染。专家指出，在人口老龄化的背景下，如何合理分配有限的财政资金，将成为今后一段时间内的重要课题。"
    "与此同时，一些商户担心施工期间顾客减少，希望政府在工程安排上充分听取沿街居民和商家的意见，尽量缩短工期，"
    "减少对日常生活和经营活动的影响。"
)
MIXED = GERMAN + "\n" + RUSSIAN + "\n" + JAPANESE

# (file name, text, encoding it is written in, the encoding the reader must record: for Greek
# either of the two code pages that give the same text)
SAMPLES = [
    ("fr-latin1.txt", FRENCH, "latin-1", "cp1252"),
    ("fr-cp1252.txt", FRENCH_CP1252, "cp1252", "cp1252"),
    ("de-cp1252.txt", GERMAN, "cp1252", "cp1252"),
    ("ru-cp1251.txt", RUSSIAN, "cp1251", "cp1251"),
    ("ru-koi8r.txt", RUSSIAN, "koi8-r", "koi8-r"),
    ("cs-cp1250.txt", CZECH, "cp1250", "cp1250"),
    ("pl-cp1250.txt", POLISH, "cp1250", "cp1250"),
    ("el-iso8859-7.txt", GREEK, "iso-8859-7", "iso8859-7|cp1253"),
    ("ja-shift-jis.txt", JAPANESE, "shift_jis", "shift_jis"),
    ("zh-gb18030.txt", CHINESE, "gb18030", "gb18030"),
]
WITH_BOM = [
    ("utf16le.txt", b"\xff\xfe" + MIXED.encode("utf-16-le"), "utf-16-le"),
    ("utf16be.txt", b"\xfe\xff" + MIXED.encode("utf-16-be"), "utf-16-be"),
    ("utf32le.txt", b"\xff\xfe\x00\x00" + MIXED.encode("utf-32-le"), "utf-32-le"),
    ("utf32be.txt", b"\x00\x00\xfe\xff" + MIXED.encode("utf-32-be"), "utf-32-be"),
]
HTML_1251 = (
    '<!DOCTYPE html>\n<html><head><meta charset="windows-1251"><title>Новости</title></head>\n'
    f"<body><p>{RUSSIAN}</p></body></html>\n"
)
HTML_HTTP_EQUIV = (
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=koi8-r">'
    f"<title>Новости</title></head><body><p>{RUSSIAN}</p></body></html>\n"
)
XHTML_GREEK = (
    '<?xml version="1.0" encoding="ISO-8859-7"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
    f"<head><title>Ειδήσεις</title></head><body><p>{GREEK}</p></body></html>\n"
)


def config_copy(folder: Path) -> Path:
    """A copy of the default config folder, to change an option in."""
    shutil.copytree(CONFIG.parent, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    return folder / CONFIG.name


def read_one(root: Path, name: str, encodings: tuple[str, ...] = ()) -> Document:
    src = next(s for s in discover(root) if s.id == name)
    [doc] = read_source(root, src, 10_000_000, encodings)
    return doc


def test_samples_are_paragraphs() -> None:
    assert all(len(text) >= 200 for _, text, _, _ in SAMPLES)


@pytest.mark.parametrize(("name", "text", "written", "recorded"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_legacy_code_pages_decode_to_the_exact_text(tmp_path: Path, name: str, text: str, written: str, recorded: str) -> None:
    (tmp_path / name).write_bytes(text.encode(written))
    doc = read_one(tmp_path, name)
    assert (doc.status, doc.text) == ("ok", text)
    assert doc.meta["encoding"] in recorded.split("|")
    assert doc.meta == {"format": "text", "encoding": doc.meta["encoding"]}


@pytest.mark.parametrize(("name", "data", "recorded"), WITH_BOM, ids=[s[0] for s in WITH_BOM])
def test_byte_order_marks_decide_and_utf16_is_not_binary(tmp_path: Path, name: str, data: bytes, recorded: str) -> None:
    (tmp_path / name).write_bytes(data)
    doc = read_one(tmp_path, name)
    assert (doc.status, doc.text) == ("ok", MIXED)
    assert doc.meta == {"format": "text", "encoding": recorded}


def test_utf8_with_and_without_bom_records_no_encoding(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + MIXED.encode())
    (tmp_path / "plain.md").write_bytes(MIXED.encode())
    assert (read_one(tmp_path, "bom.txt").text, read_one(tmp_path, "bom.txt").meta) == (MIXED, {"format": "text"})
    assert (read_one(tmp_path, "plain.md").text, read_one(tmp_path, "plain.md").meta) == (MIXED, {"format": "markdown"})


def test_declared_charsets_are_used(tmp_path: Path) -> None:
    (tmp_path / "meta.html").write_bytes(HTML_1251.encode("cp1251"))
    (tmp_path / "equiv.html").write_bytes(HTML_HTTP_EQUIV.encode("koi8-r"))
    (tmp_path / "greek.html").write_bytes(XHTML_GREEK.encode("iso-8859-7"))
    for name, text, recorded in [("meta.html", HTML_1251, "cp1251"), ("equiv.html", HTML_HTTP_EQUIV, "koi8-r"), ("greek.html", XHTML_GREEK, "iso8859-7")]:
        doc = read_one(tmp_path, name)
        assert (doc.status, doc.text, doc.meta) == ("ok", text, {"format": "html", "encoding": recorded}), name


def test_a_wrong_declaration_falls_through_and_is_uncertain(tmp_path: Path) -> None:
    page = f'<html><head><meta charset="utf-8"></head><body><p>{GERMAN}</p></body></html>'
    (tmp_path / "liar.html").write_bytes(page.encode("cp1252"))
    doc = read_one(tmp_path, "liar.html")
    assert (doc.status, doc.text) == ("ok", page)
    assert doc.meta == {"format": "html", "encoding": "cp1252", "encoding_uncertain": True}


def test_bbc_latin1_article_keeps_its_pound_sign(tmp_path: Path) -> None:
    raw = shared_path("corpora", "bbc", "sport", "199.txt").read_bytes()
    (tmp_path / "199.txt").write_bytes(raw)
    doc = read_one(tmp_path, "199.txt")
    assert raw.count(b"\xa3") == 1 and "£15.8m" in raw.decode("cp1252")
    assert (doc.status, doc.text) == ("ok", raw.decode("cp1252"))
    assert doc.meta["encoding"] == "cp1252"


SHORT = [
    ("Crème brûlée, s'il vous plaît.", "cp1252"),
    ("On se bat au corps à corps.", "latin-1"),
    ("Grüße aus Köln!", "cp1252"),
    ("Привет, мир!", "koi8-r"),
    ("Привет, мир!", "cp1251"),
    ("Žluťoučký kůň.", "cp1250"),
    ("Καλημέρα σας.", "iso-8859-7"),
    ("こんにちは。", "shift_jis"),
]


@pytest.mark.parametrize(("text", "written"), SHORT, ids=[f"{t[:8]}-{e}" for t, e in SHORT])
def test_short_texts_are_right_or_flagged_uncertain(tmp_path: Path, text: str, written: str) -> None:
    (tmp_path / "short.txt").write_bytes(text.encode(written))
    doc = read_one(tmp_path, "short.txt")
    assert doc.status == "ok"
    assert doc.text == text or doc.meta.get("encoding_uncertain") is True, (doc.text, doc.meta)


def test_jsonl_is_decoded_once_as_a_whole(tmp_path: Path) -> None:
    lines = [{"id": "a", "text": RUSSIAN}, {"id": "b", "text": "Да."}, {"id": "c", "text": "Ok, no letters to guess from."}]
    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    (tmp_path / "batch.jsonl").write_bytes(body.encode("koi8-r"))
    docs = read_source(tmp_path, next(discover(tmp_path)), 10_000_000)
    assert [(d.status, d.text) for d in docs] == [("ok", line["text"]) for line in lines]
    assert [d.meta["encoding"] for d in docs] == ["koi8-r"] * 3


def test_configured_encodings_replace_detection(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_bytes("Да, конечно.".encode("koi8-r"))
    (tmp_path / "utf8.txt").write_bytes(RUSSIAN.encode())
    (tmp_path / "french.txt").write_bytes(FRENCH.encode("latin-1"))
    doc = read_one(tmp_path, "short.txt", ("koi8-r", "cp1251"))
    assert (doc.text, doc.meta) == ("Да, конечно.", {"format": "text", "encoding": "koi8-r"})
    assert read_one(tmp_path, "utf8.txt", ("koi8-r",)).text == RUSSIAN, "UTF-8 is still tried first"
    rejected = read_one(tmp_path, "french.txt", ("ascii", "utf-16-le"))
    assert (rejected.status, rejected.reason) == (
        "rejected", "undecodable text: not UTF-8 and none of [input] encodings (ascii, utf-16-le) fits"
    )


def test_unknown_configured_encoding_is_a_config_error(tmp_path: Path) -> None:
    config = config_copy(tmp_path / "config")
    set_option(config, "input", 'encodings = ["cp1251", "klingon-8"]')
    with pytest.raises(ConfigError, match=r"input\.encodings: .*unknown encoding 'klingon-8'"):
        load_config(config)


def test_summary_counts_documents_not_in_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from textmill.flows.cli import print_summary
    from textmill.flows.report import StatsCollector, build_manifest, summary_markdown

    collector = StatsCollector()
    for meta in ({"encoding": "cp1252"}, {"encoding": "koi8-r", "encoding_uncertain": True}, {}):
        collector.add(Document(id="x", path="x", sha256="0", text="t", meta=meta))
    manifest = build_manifest(
        run_id="r", run_name="n", corpus="c", config_path="p", config_digest="d", files=3, step_versions={},
        stages={}, stats=collector.result(), outputs=[],
    )
    assert manifest["encodings"] == {"non_utf8": 2, "uncertain": 1}
    assert "Not UTF-8: 2 documents decoded from another encoding, 1 uncertain." in summary_markdown(manifest)
    print_summary(manifest, tmp_path)
    rows = [line for line in capsys.readouterr().out.splitlines() if "not UTF-8" in line]
    assert [" ".join(row.strip("│ ").split()) for row in rows] == ["not UTF-8 │ 2 decoded from another encoding, 1 uncertain"]


@pytest.mark.slow
def test_flow_publishes_exact_text_and_counts_encodings(prefect_server: None, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fr.txt").write_bytes(FRENCH.encode("latin-1"))
    (corpus / "ru.txt").write_bytes(RUSSIAN.encode("koi8-r"))
    (corpus / "mixed.txt").write_bytes(b"\xff\xfe" + (GERMAN + " " + RUSSIAN).encode("utf-16-le"))
    (corpus / "en.txt").write_bytes(("The council met on Tuesday to discuss the budget for next year. " * 4).encode())
    (corpus / "short.txt").write_bytes("Привет, мир!".encode("cp1251"))
    config = config_copy(tmp_path / "config")
    manifest = run_flow(corpus, tmp_path / "out", config)
    recs = records(tmp_path / "out")
    assert recs["fr.txt"]["text"] == FRENCH
    assert recs["ru.txt"]["text"] == RUSSIAN
    assert recs["mixed.txt"]["text"] == GERMAN + " " + RUSSIAN
    assert {k: (r["meta"].get("encoding"), r["meta"].get("encoding_uncertain")) for k, r in recs.items()} == {
        "fr.txt": ("cp1252", None),
        "ru.txt": ("koi8-r", None),
        "mixed.txt": ("utf-16-le", None),
        "en.txt": (None, None),
        "short.txt": ("cp1251", True),
    }
    assert manifest["encodings"] == {"non_utf8": 4, "uncertain": 1}

    set_option(config, "input", 'encodings = ["cp1251"]')
    again = run_flow(corpus, tmp_path / "out", config)
    assert again["read"]["computed"] == 5, "[input] encodings is part of the read cache key"
    assert records(tmp_path / "out")["short.txt"]["meta"] == {"format": "text", "encoding": "cp1251"}
    assert again["encodings"] == {"non_utf8": 4, "uncertain": 0}
