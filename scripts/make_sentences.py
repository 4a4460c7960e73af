#!/usr/bin/env python3
"""Deterministic generator of Korean business-document sentences.

The sentences are synthetic but shaped like the text the translation worker
sees in production: Hangul with a sprinkle of digits, dates, amounts, Latin
product names and acronyms, and the usual punctuation.  Sentence lengths vary
roughly between 5 and 60 whitespace-separated words.

The module is also imported by ``make_test_model.py`` to build the
SentencePiece training corpus (Korean plus English text), so that common
Hangul syllables end up as pieces of the test vocabulary.

Usage::

    python3 scripts/make_sentences.py --out benches/data/sentences.ko.txt
    python3 scripts/make_sentences.py --lang en -n 20        # English, stdout

The output only depends on ``--seed``, ``-n`` and ``--lang``.
"""

import argparse
import random
import sys
from typing import List

# --------------------------------------------------------------------------
# Korean building blocks
# --------------------------------------------------------------------------

KO_COMPANIES = [
    "한빛전자", "대성물산", "미래에셋", "서울상사", "동해해운", "가온테크",
    "ABC전자", "KT&G", "LG화학", "SK하이닉스", "누리소프트", "세종정밀",
    "한결건설", "(주)태평양무역", "NextGen Korea", "오로라바이오",
]
KO_DEPARTMENTS = [
    "영업팀", "재무팀", "인사팀", "법무팀", "구매팀", "품질관리팀", "경영지원실",
    "기술연구소", "마케팅본부", "고객지원센터", "생산관리부", "IT운영팀",
    "전략기획실", "해외사업부", "물류센터",
]
KO_PEOPLE = [
    "김민수 과장", "이서연 대리", "박지훈 부장", "최유진 팀장", "정하늘 차장",
    "강도윤 사원", "윤서준 이사", "장미영 실장", "임재현 상무", "한지민 주임",
]
KO_DOCS = [
    "계약서", "견적서", "발주서", "회의록", "보고서", "제안서", "품의서",
    "세금계산서", "거래명세서", "사업계획서", "검수확인서", "업무협약서",
    "운영 매뉴얼", "보안 지침", "출장 보고서", "예산 집행 내역",
]
KO_TOPICS = [
    "신규 거래처 등록", "하반기 매출 목표", "공급망 안정화", "원가 절감 방안",
    "품질 개선 계획", "고객 불만 처리", "시스템 유지보수", "해외 시장 진출",
    "인력 충원 계획", "정보보호 강화", "납기 준수율", "재고 관리 효율화",
    "ERP 시스템 전환", "클라우드 마이그레이션", "ESG 경영 보고", "연구개발 투자",
    "KPI 달성 현황", "API 연동 테스트", "SaaS 라이선스 갱신", "AI 기반 수요 예측",
]
KO_PRODUCTS = [
    "Model X-200", "HB-3000 시리즈", "스마트 센서 모듈", "산업용 배터리",
    "Galaxy Tab", "OLED 패널", "물류 관리 솔루션", "Project Alpha",
    "v2.4.1 업데이트", "보안 게이트웨이", "전력 변환 장치", "PCB 기판",
]
KO_ADVERBS = [
    "신속하게", "정확하게", "원활하게", "철저하게", "지속적으로", "우선적으로",
    "예정대로", "부득이하게", "긴급히", "최종적으로", "추가로", "전면적으로",
]
KO_PREDICATES = [
    "검토해 주시기 바랍니다", "확인 부탁드립니다", "진행할 예정입니다",
    "완료되었습니다", "승인되었습니다", "보류되었습니다", "공유드립니다",
    "협의가 필요합니다", "제출해 주시기 바랍니다", "반영하였습니다",
    "변경되었음을 알려드립니다", "요청드립니다", "마무리할 계획입니다",
    "논의하였습니다", "개선이 시급합니다", "전달하였습니다",
]
KO_CONNECTORS = [
    "또한", "그리고", "따라서", "다만", "한편", "이에 따라", "아울러",
    "그러나", "특히", "참고로", "이와 관련하여", "결과적으로",
]
KO_CLAUSE_ENDS = [
    "검토하였으며", "진행 중이며", "완료하였고", "확인하였으나", "협의하여",
    "요청하였고", "반영하기 위해", "준비하고 있으며", "점검한 결과",
    "논의한 바와 같이", "결정됨에 따라",
]
KO_PLACES = [
    "서울 본사", "부산 공장", "판교 사무소", "대전 연구소", "인천 물류센터",
    "싱가포르 지사", "베트남 법인", "본관 3층 회의실", "온라인 화상회의",
]


def _ko_date(rng: random.Random) -> str:
    return "%d년 %d월 %d일" % (rng.randint(2021, 2026), rng.randint(1, 12), rng.randint(1, 28))


def _ko_amount(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return "{:,}원".format(rng.randrange(10, 100000) * 1000)
    if style == 1:
        return "%d억 %d천만 원" % (rng.randint(1, 99), rng.randint(1, 9))
    if style == 2:
        return "USD %s" % "{:,}".format(rng.randrange(100, 999999))
    return "%d.%d%%" % (rng.randint(0, 99), rng.randint(0, 9))


def _ko_code(rng: random.Random) -> str:
    return "%s-%04d" % (rng.choice(["PO", "INV", "CT", "QA", "REQ", "HR"]), rng.randrange(10000))


def _final_consonant(word: str) -> int:
    """Index of the final consonant (받침) of ``word``'s last syllable, 0 if none.

    Non-Hangul endings (digits, Latin letters, brackets) get a rough guess of
    how they are read aloud, which is good enough for synthetic text.
    """
    last = word.rstrip(")").rstrip()[-1]
    if "\uac00" <= last <= "\ud7a3":
        return (ord(last) - 0xAC00) % 28
    if last in "1378Ll":
        return 8  # ㄹ (일, 삼 -> ㅁ is close enough, 칠, 팔, 엘)
    return 4 if last in "0369MNmnRr" else 0


def _josa(word: str, particle: str) -> str:
    """Attach a Korean particle, picking the form that agrees with ``word``."""
    pairs = [("으로", "로"), ("은", "는"), ("이", "가"), ("을", "를"), ("과", "와")]
    final = _final_consonant(word)
    for with_final, without in pairs:
        if particle.startswith(with_final):
            rest = particle[len(with_final):]
            # After ㄹ, 으로 becomes 로 (서울로, 회의실로).
            use_final = final != 0 and not (with_final == "으로" and final == 8)
            return word + (with_final if use_final else without) + rest
    return word + particle


def _ko_noun_phrase(rng: random.Random) -> str:
    """A noun phrase, usually with a particle attached."""
    kind = rng.randrange(9)
    if kind == 0:
        return _josa(rng.choice(KO_COMPANIES), rng.choice(["과", "의", "에서", "은", "과의"]))
    if kind == 1:
        return _josa(rng.choice(KO_DEPARTMENTS), rng.choice(["에서", "은", "의", "과 함께"]))
    if kind == 2:
        return _josa(rng.choice(KO_DOCS), rng.choice(["을", "은", "의", "에 대한"]))
    if kind == 3:
        return _josa(rng.choice(KO_TOPICS), rng.choice(["에 관한", "과 관련하여", "을", "은"]))
    if kind == 4:
        return _ko_date(rng) + rng.choice(["까지", "부터", "에", " 기준으로"])
    if kind == 5:
        return _josa(_ko_amount(rng), rng.choice(["의", "을", "으로", " 규모의"]))
    if kind == 6:
        return _josa(rng.choice(KO_PRODUCTS), rng.choice(["의", "을", "에 대해", " 관련"]))
    if kind == 7:
        return _josa(rng.choice(KO_PEOPLE), rng.choice(["님께서", "에게", "이", "의 요청으로"]))
    return _josa(rng.choice(KO_PLACES), rng.choice(["에서", "으로", "의"]))


def _ko_clause(rng: random.Random, final: bool) -> str:
    words = [_ko_noun_phrase(rng) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        words.append("(%s)" % _ko_code(rng))
    if rng.random() < 0.4:
        words.append(rng.choice(KO_ADVERBS))
    words.append(rng.choice(KO_PREDICATES if final else KO_CLAUSE_ENDS))
    return " ".join(words)


def korean_sentence(rng: random.Random, min_words: int = 5, max_words: int = 60) -> str:
    """One Korean business sentence of roughly ``min_words``..``max_words`` words."""
    target = int(min(max_words, max(min_words, rng.triangular(min_words, max_words, 8))))
    clauses: List[str] = []
    count = 0
    while True:
        clause = _ko_clause(rng, final=False)
        if clauses and rng.random() < 0.35:
            clause = rng.choice(KO_CONNECTORS) + " " + clause
        n = len(clause.split())
        if clauses and count + n > target:
            break
        clauses.append(clause)
        count += n
        if count >= target - 3:
            break
    final = _ko_clause(rng, final=True)
    sentence = ", ".join(clauses + [final])
    words = sentence.split()
    if len(words) > max_words:
        words = words[:max_words - 1] + [rng.choice(KO_PREDICATES).split()[-1]]
    sentence = " ".join(words)
    if len(words) < min_words:
        sentence = rng.choice(KO_CONNECTORS) + " " + _ko_clause(rng, False) + ", " + sentence
    end = rng.choices([".", ".", ".", "?", "!", ". (끝)", "…"], k=1)[0]
    if " " in end and len(sentence.split()) >= max_words:
        end = "."
    if rng.random() < 0.08:
        sentence = "“%s”" % sentence
    if rng.random() < 0.1 and len(sentence.split()) < max_words:
        sentence = "%d. %s" % (rng.randint(1, 12), sentence)
    return sentence + end


# --------------------------------------------------------------------------
# English building blocks (SentencePiece corpus only)
# --------------------------------------------------------------------------

EN_SUBJECTS = [
    "The sales team", "Our finance department", "The project manager", "The client",
    "Mr. Kim", "Ms. Park", "The board of directors", "The vendor", "Our legal counsel",
    "The quality assurance group", "Headquarters", "The IT operations team",
]
EN_VERBS = [
    "has reviewed", "will submit", "approved", "requested", "is preparing",
    "confirmed", "postponed", "updated", "signed", "rejected", "shared", "finalized",
]
EN_OBJECTS = [
    "the purchase order", "the quarterly report", "the draft contract", "the invoice",
    "the meeting minutes", "the budget proposal", "the delivery schedule",
    "the security guidelines", "the migration plan", "the price quotation",
    "the new supplier agreement", "the audit findings", "the KPI dashboard",
]
EN_TAILS = [
    "before the deadline", "as discussed yesterday", "for the second half of the year",
    "with minor changes", "due to supply chain issues", "in accordance with our policy",
    "after the internal review", "pending legal approval", "for the Seoul office",
    "to reduce costs by 12%", "by Friday, March 14", "under contract no. CT-2291",
]


def english_sentence(rng: random.Random) -> str:
    """One English business sentence (used for the SentencePiece corpus)."""
    parts = [rng.choice(EN_SUBJECTS), rng.choice(EN_VERBS), rng.choice(EN_OBJECTS)]
    for _ in range(rng.randint(0, 3)):
        parts.append(rng.choice(EN_TAILS))
    sentence = " ".join(parts)
    if rng.random() < 0.3:
        sentence += ", and " + " ".join(
            [rng.choice(EN_SUBJECTS).lower(), rng.choice(EN_VERBS), rng.choice(EN_OBJECTS)])
    if rng.random() < 0.2:
        sentence += " (total: ${:,}.00)".format(rng.randrange(1000, 9999999))
    return sentence + rng.choice([".", ".", "!", "?"])


def generate(n: int, seed: int = 20240601, lang: str = "ko") -> List[str]:
    """Return ``n`` deterministic sentences in ``lang`` ("ko" or "en")."""
    rng = random.Random("%s-%d" % (lang, seed))
    make = korean_sentence if lang == "ko" else english_sentence
    return [make(rng) for _ in range(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output file (default: stdout)")
    parser.add_argument("-n", type=int, default=1000, help="number of sentences (default 1000)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--lang", choices=["ko", "en"], default="ko")
    args = parser.parse_args(argv)

    text = "".join(line + "\n" for line in generate(args.n, args.seed, args.lang))
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
