#!/usr/bin/env python3
"""Writes the office fixtures of tests/fixtures/files/ with real tools nobody here
wrote: python-docx (.docx), python-pptx (.pptx) and odfpy (.odt), from PyPI.

The output is committed, so the test suite needs no Python. Re-run after changing
this script:

    python3 -m venv ~/.cache/translation-worker/fixtures-venv
    ~/.cache/translation-worker/fixtures-venv/bin/pip install python-docx python-pptx odfpy
    ~/.cache/translation-worker/fixtures-venv/bin/python scripts/make_office_fixtures.py

The .txt, .md and .html fixtures beside them are written by hand.
"""

import os
import sys

from docx import Document
from docx.enum.text import WD_BREAK
from docx.opc.constants import RELATIONSHIP_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from pptx import Presentation
from pptx.util import Inches
from odf.opendocument import OpenDocumentText
from odf.style import (Footer, Header, MasterPage, PageLayout, Style,
                       TextProperties)
from odf.table import Table, TableCell, TableColumn, TableRow
from odf.text import A, H, List, ListItem, P, Span

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                   "fixtures", "files")


def add_hyperlink(paragraph, url, text):
    """python-docx has no hyperlink API: the documented workaround (a relationship
    plus a w:hyperlink element around a run)."""
    r_id = paragraph.part.relate_to(url, RELATIONSHIP_TYPE.HYPERLINK,
                                    is_external=True)
    link = OxmlElement("w:hyperlink")
    link.set(qn("r:id"), r_id)
    run = OxmlElement("w:r")
    props = OxmlElement("w:rPr")
    style = OxmlElement("w:rStyle")
    style.set(qn("w:val"), "Hyperlink")
    props.append(style)
    run.append(props)
    t = OxmlElement("w:t")
    t.text = text
    run.append(t)
    link.append(run)
    paragraph._p.append(link)


def make_docx(path):
    doc = Document()
    doc.add_heading("분기 보고서: Quarterly Report", level=1)
    p = doc.add_paragraph("회의는 ")
    p.add_run("오전 10시").bold = True
    p.add_run("에 시작합니다. 자료를 ")
    p.add_run("미리").italic = True
    p.add_run(" 준비해 주세요.")
    p = doc.add_paragraph("The report is due on ")
    p.add_run("Friday").bold = True
    p.add_run(", and Dr. Kim will ")
    r = p.add_run("review")
    r.italic = True
    r.bold = True
    p.add_run(" it at 3:30 p.m. Read the ")
    add_hyperlink(p, "https://example.com/guide", "style guide")
    p.add_run(" first & keep <tags> as they are.")
    p = doc.add_paragraph("첫 줄입니다.")
    p.add_run().add_break(WD_BREAK.LINE)
    p.add_run("둘째 줄입니다.")
    doc.add_heading("Action items", level=2)
    doc.add_paragraph("Send the draft to the team", style="List Bullet")
    doc.add_paragraph("초안을 검토합니다", style="List Bullet")
    doc.add_paragraph("Publish on Monday", style="List Number")
    table = doc.add_table(rows=3, cols=2)
    rows = [("항목", "Owner"), ("예산 검토", "Alice"), ("Launch plan", "김민수")]
    for row, (a, b) in zip(table.rows, rows):
        row.cells[0].text = a
        row.cells[1].text = b
    doc.add_paragraph("   ")  # whitespace only: nothing to translate
    section = doc.sections[0]
    section.header.paragraphs[0].text = "사내 한정 — Internal use only"
    section.footer.paragraphs[0].text = "Page footer: 감사합니다."
    if hasattr(doc, "add_comment"):  # python-docx >= 1.2
        para = doc.paragraphs[1]
        doc.add_comment(para.runs[1], text="시간을 확인해 주세요. Please confirm.",
                        author="Reviewer", initials="RV")
    doc.save(path)


def make_pptx(path):
    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[0])
    slide.shapes.title.text = "제품 소개 Product Overview"
    slide.placeholders[1].text = "2026년 4분기 — Q4 2026"

    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Key points"
    body = slide.placeholders[1].text_frame
    body.text = "빠르고 안정적인 번역"
    p = body.add_paragraph()
    r = p.add_run()
    r.text = "Works with "
    r = p.add_run()
    r.text = "bold"
    r.font.bold = True
    r = p.add_run()
    r.text = " and "
    r = p.add_run()
    r.text = "linked"
    r.hyperlink.address = "https://example.com/"
    r = p.add_run()
    r.text = " text."
    p = body.add_paragraph()
    p.text = "두 번째 수준의 항목"
    p.level = 1
    notes = slide.notes_slide.notes_text_frame
    notes.text = "발표자 노트: 천천히 말하세요. Speak slowly."

    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "표 Table"
    shape = slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6),
                                   Inches(1.5))
    cells = [("이름", "Name"), ("가격 & 수량", "Price < 10")]
    for r, row in enumerate(cells):
        for c, text in enumerate(row):
            shape.table.cell(r, c).text = text
    prs.save(path)


def make_odt(path):
    doc = OpenDocumentText()
    bold = Style(name="Bold", family="text")
    bold.addElement(TextProperties(fontweight="bold"))
    italic = Style(name="Italic", family="text")
    italic.addElement(TextProperties(fontstyle="italic"))
    doc.automaticstyles.addElement(bold)
    doc.automaticstyles.addElement(italic)

    layout = PageLayout(name="Layout")
    doc.automaticstyles.addElement(layout)
    master = MasterPage(name="Standard", pagelayoutname=layout)
    header = Header()
    header.addElement(P(text="머리글: Confidential draft"))
    master.addElement(header)
    footer = Footer()
    footer.addElement(P(text="Footer text — 바닥글"))
    master.addElement(footer)
    doc.masterstyles.addElement(master)

    doc.text.addElement(H(outlinelevel=1, text="회의록 Meeting Notes"))
    p = P(text="회의는 ")
    p.addElement(Span(stylename=bold, text="오전 10시"))
    p.addText("에 시작합니다. 자료를 ")
    p.addElement(Span(stylename=italic, text="미리"))
    p.addText(" 준비해 주세요.")
    doc.text.addElement(p)
    p = P(text="Read the ")
    p.addElement(A(href="https://example.com/guide", text="style guide"))
    p.addText(" before  the review & keep <tags>.")
    doc.text.addElement(p)
    lst = List()
    for text in ("First item", "둘째 항목", "Third item"):
        item = ListItem()
        item.addElement(P(text=text))
        lst.addElement(item)
    doc.text.addElement(lst)
    table = Table(name="Budget")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for a, b in (("항목", "Cost"), ("Design", "1,000원")):
        row = TableRow()
        for text in (a, b):
            cell = TableCell()
            cell.addElement(P(text=text))
            row.addElement(cell)
        table.addElement(row)
    doc.text.addElement(table)
    doc.save(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_docx(os.path.join(OUT, "report.docx"))
    make_pptx(os.path.join(OUT, "slides.pptx"))
    make_odt(os.path.join(OUT, "notes.odt"))
    print("wrote", ", ".join(sorted(os.listdir(OUT))), "in", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
