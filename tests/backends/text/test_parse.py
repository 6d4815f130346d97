import pytest

from sae_lab.backends.text import parse_answer_tag, parse_short_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SHORT ANSWER: spokes\nEVIDENCE: AUC 0.97 on spokes", ("spokes", "AUC 0.97 on spokes")),
        (
            "short answer: Spokes of a wheel.\nevidence: top classes sun, wheel.",
            ("Spokes of a wheel", "top classes sun, wheel"),
        ),
        ('**SHORT ANSWER:** "radial lines"\n**EVIDENCE:** fires on sun', ("radial lines", "fires on sun")),
        ("Sure! Here you go:\n\n  SHORT   ANSWER :   'zigzag edge'  \n  EVIDENCE:  x  ", ("zigzag edge", "x")),
        ("SHORT ANSWER: circle", ("circle", "")),
        ("SHORT ANSWER:\n\ncurved arc\nEVIDENCE: y", ("curved arc", "y")),
        (
            "- **Short answer**: hatching\n- **Evidence**: dense parallel strokes",
            ("hatching", "dense parallel strokes"),
        ),
        ("SHORT ANSWER: <≤ 12 words>\nEVIDENCE: <one line>\n\nSHORT ANSWER: dots\nEVIDENCE: z", ("dots", "z")),
        ("`SHORT ANSWER: star.`", ("star", "")),
        ("SHORT ANSWER: spiral EVIDENCE: coiled strokes", ("spiral", "coiled strokes")),
        ("Short Answer: cross — Evidence: two bars", ("cross", "two bars")),
    ],
)
def test_short_answer_well_formed(text, expected):
    assert parse_short_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n ",
        "The concept is spokes.",
        "EVIDENCE: only evidence",
        "SHORT ANSWER:\nEVIDENCE: the label is missing",
        'SHORT ANSWER: ""',
        "SHORT ANSWER: " + " ".join(["word"] * 13),
        "SHORT ANSWER: <≤ 12 words>",
    ],
)
def test_short_answer_malformed(text):
    assert parse_short_answer(text) is None


def test_short_answer_twelve_words_is_fine():
    label = " ".join(["word"] * 12)
    assert parse_short_answer(f"SHORT ANSWER: {label}") == (label, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<thinking>round shapes dominate</thinking><answer>circle</answer>", "circle"),
        ("<THINKING>hmm</THINKING>\n<ANSWER> Radial Spokes </ANSWER>", "Radial Spokes"),
        ('<thinking>x</thinking><answer>"wavy line".</answer> hope this helps', "wavy line"),
        ("Here: <answer>zigzag", "zigzag"),
        ("<answer>star burst\nI chose this because…", "star burst"),
        ("<thinking>maybe <answer>wrong</answer>? no</thinking><answer>dots</answer>", "dots"),
        ("<answer>first</answer> then <answer>second</answer>", "second"),
        ("< answer >'arc'</ answer >", "arc"),
        ("<answer>**circle**</answer>", "circle"),
    ],
)
def test_answer_tag_well_formed(text, expected):
    assert parse_answer_tag(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "no tags at all",
        "<answer></answer>",
        "<answer>   </answer>",
        "<answer>a very long concept name</answer>",
    ],
)
def test_answer_tag_malformed(text):
    assert parse_answer_tag(text) is None
