"""Manifest reading and the LibriSpeech / AISHELL-1 / Seed-TTS / synthetic-corpus builders on tiny fake
folder trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mimo_audio.cli import main
from mimo_audio.errors import MimoAudioError
from mimo_audio.eval.builders import aishell, librispeech, seedtts, synth
from mimo_audio.eval.manifest import FieldSpec, parse_seedtts_line, read_manifest

from conftest import clip_path

ASR = FieldSpec(required=("audio", "text", "language"))


def fake_librispeech(root: Path) -> Path:
    split = root / "LibriSpeech" / "test-clean"
    for spk, chap, utts in (("1089", "134686", ["0000", "0001"]), ("121", "121726", ["0000"])):
        d = split / spk / chap
        d.mkdir(parents=True)
        lines = [f"{spk}-{chap}-{u} WORDS OF {spk} {u}" for u in utts]
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for u in utts:
            if (spk, u) != ("121", "0000"):  # one listed utterance has no audio
                shutil.copy(clip_path("speech_a"), d / f"{spk}-{chap}-{u}.flac")
    return split


def fake_aishell(root: Path) -> Path:
    d = root / "data_aishell"
    (d / "transcript").mkdir(parents=True)
    (d / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "BAC009S0764W0121 甚至 出现 交易 几乎 停滞 的 情况\nBAC009S0764W0122 一二线 城市 虽然 也 处于 调整 中\n"
        "BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大 的 限 购\n",
        encoding="utf-8",
    )
    for split, utt in (
        ("test", "BAC009S0764W0121"),
        ("test", "BAC009S0764W0122"),
        ("test", "BAC009S0764W0999"),
        ("train", "BAC009S0002W0122"),
    ):
        spk = "S" + utt[7:11]
        (d / "wav" / split / spk).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_path("speech_b"), d / "wav" / split / spk / f"{utt}.wav")
    return d


def test_librispeech_builder(tmp_path):
    split = fake_librispeech(tmp_path)
    entries, missing = librispeech(split, tmp_path)
    assert missing == 1
    assert [e["id"] for e in entries] == ["1089-134686-0000", "1089-134686-0001"]
    assert entries[0] == {
        "id": "1089-134686-0000",
        "audio": "LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac",
        "text": "WORDS OF 1089 0000",
        "language": "en",
        "speaker": "1089",
    }


def test_aishell_builder(tmp_path):
    d = fake_aishell(tmp_path)
    entries, missing = aishell(d, d)
    assert missing == 1  # W0999 has no transcript line
    assert [(e["id"], e["text"], e["audio"]) for e in entries] == [
        ("BAC009S0764W0121", "甚至出现交易几乎停滞的情况", "wav/test/S0764/BAC009S0764W0121.wav"),
        ("BAC009S0764W0122", "一二线城市虽然也处于调整中", "wav/test/S0764/BAC009S0764W0122.wav"),
    ]
    assert aishell(d, d, split="train")[0][0]["id"] == "BAC009S0002W0122"
    with pytest.raises(MimoAudioError, match="wav/dev"):
        aishell(d, d, split="dev")
    with pytest.raises(MimoAudioError, match="aishell_transcript"):
        aishell(tmp_path, tmp_path)


def test_manifest_cli_builds_readable_manifests(tmp_path, capsys):
    split = fake_librispeech(tmp_path / "data")
    out = tmp_path / "manifests" / "ls.jsonl"
    assert main(["eval", "manifest", "librispeech", str(split), "--out", str(out)]) == 0
    assert "wrote 2 item(s)" in capsys.readouterr().err
    items, errors = read_manifest(out, ASR)  # paths resolve relative to the manifest's folder
    assert not errors and [Path(it["audio"]).name for it in items] == [
        "1089-134686-0000.flac",
        "1089-134686-0001.flac",
    ]
    d = fake_aishell(tmp_path / "data")
    out2 = tmp_path / "manifests" / "aishell.jsonl"
    assert main(["eval", "manifest", "aishell", str(d), "--out", str(out2)]) == 0
    items, errors = read_manifest(out2, ASR)
    assert not errors and {it.language for it in items} == {"zh"}
    assert main(["eval", "manifest", "librispeech", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_seedtts_converter_and_line_parser(tmp_path):
    (tmp_path / "en" / "prompt-wavs").mkdir(parents=True)
    shutil.copy(clip_path("speech_a"), tmp_path / "en" / "prompt-wavs" / "p1.wav")
    meta = tmp_path / "en" / "meta.lst"
    meta.write_text("u1|Prompt text.|prompt-wavs/p1.wav|Target text.\nbroken line\n", encoding="utf-8")
    entries, bad = seedtts(meta, tmp_path)
    assert bad == 1
    assert entries == [
        {
            "id": "u1",
            "text": "Target text.",
            "prompt_text": "Prompt text.",
            "prompt_audio": "en/prompt-wavs/p1.wav",
            "language": "en",
        }
    ]
    zh = parse_seedtts_line("u2|提示文本|p.wav|今天天气很好|gt/u2.wav")
    assert zh["language"] == "zh" and zh["reference_audio"] == "gt/u2.wav"
    with pytest.raises(ValueError):
        parse_seedtts_line("only|three|fields")


def test_read_manifest_errors_by_line(tmp_path):
    shutil.copy(clip_path("speech_a"), tmp_path / "a.wav")
    good = {"audio": "a.wav", "text": "x", "language": "en"}
    lines = [
        json.dumps({**good, "id": "1"}),
        "",
        "# comment",
        "[1, 2]",
        json.dumps({**good, "id": "1"}),
        json.dumps({**good, "id": "2", "text": 5}),
        json.dumps({**good, "id": "3", "audio": "."}),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items, errors = read_manifest(tmp_path / "m.jsonl", ASR)
    assert [(it.id, it.line) for it in items] == [("1", 1)]
    assert Path(items[0]["audio"]) == (tmp_path / "a.wav").resolve()
    assert [str(e) for e in errors] == [
        "line 4: expected a JSON object, got list",
        "line 5: duplicate id '1' (first on line 1)",
        "line 6: field 'text' must be a string",
        "line 7: audio .: no such file",
    ]
    # without "id": the audio stem and a hash of the line (same audio, other question → another item)
    q = {"audio": "a.wav", "question": "Who?", "choices": ["x", "y"], "answer": "A"}
    (tmp_path / "q.jsonl").write_text(
        "\n".join(json.dumps(x) for x in (q, {**q, "question": "Why?"}, q)) + "\n"
    )
    items, errors = read_manifest(
        tmp_path / "q.jsonl", FieldSpec(required=("audio", "question"), language=False)
    )
    assert len(items) == 2 and items[0].id != items[1].id and items[0].id.startswith("a-")
    assert [e.line for e in errors] == [3] and "duplicate id" in errors[0].message
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "\xe9"}\n')
    with pytest.raises(MimoAudioError, match="not UTF-8"):
        read_manifest(tmp_path / "latin1.jsonl", ASR)


def test_cli_lists_match_the_package():
    """The CLI keeps its own copies (it must not import the extra to build --help): no drift."""
    from mimo_audio.api import FEWSHOT_PRESETS
    from mimo_audio.cli import eval_cmds
    from mimo_audio.eval import SUITES

    assert eval_cmds.SUITES == SUITES
    assert eval_cmds.PRESETS == tuple(FEWSHOT_PRESETS)


def fake_synth(root: Path) -> Path:
    """A `data synth`-shaped corpus: held-out manifests over copies of one clip."""
    (root / "clips").mkdir(parents=True)
    plain = {
        "style": {"rate": "normal", "pitch": "normal", "volume": "normal", "whisper": "no"},
        "augment": None,
    }
    rows = []
    for i, (text, lang, kind) in enumerate(
        [("hello one", "en", "plain"), ("你好一", "zh", "plain"), ("hello two", "en", "noisy"),
         ("hello one", "en", "plain"), ("hello three", "en", "plain"), ("你好二", "zh", "fast")]
    ):  # fmt: skip
        shutil.copy(clip_path("speech_a"), root / "clips" / f"c{i}.wav")
        meta = dict(plain, lang=lang, speaker=f"v{i}")
        if kind == "noisy":
            meta["augment"] = {"noise": "pink", "snr_db": 5}
        elif kind == "fast":
            meta["style"] = dict(plain["style"], rate="fast")
        rows.append({"task": "asr", "audio": f"clips/c{i}.wav", "text": text, "meta": meta})
    (root / "test_asr.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8"
    )
    tts = [dict(r, task="tts") for r in rows]
    (root / "test_tts.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tts), "utf-8"
    )
    vc = {"task": "in_context_s2s", "instruction": "x", "audio": "clips/c0.wav", "output_audio": "clips/c1.wav",
          "output_transcription": "你好一", "examples": [{"input_audio": "clips/c2.wav", "output_audio": "clips/c3.wav",
                                                          "output_transcription": "hello one"}]}  # fmt: skip
    (root / "test_vc.jsonl").write_text(json.dumps(vc, ensure_ascii=False) + "\n", "utf-8")
    return root


def test_synth_builder_takes_plain_held_out_clips_per_suite(tmp_path, capsys):
    corpus = fake_synth(tmp_path / "corpus")
    asr, left_out = synth(corpus, corpus, "asr", 1)
    assert [(e["text"], e["language"], e["audio"]) for e in asr] == [
        ("hello one", "en", "clips/c0.wav"),
        ("你好一", "zh", "clips/c1.wav"),
    ]
    assert left_out == 2  # the noisy and the fast clip
    tts, _ = synth(corpus, corpus, "tts", 3)  # 2 English + 1 Mandarin distinct sentences
    assert [e["text"] for e in tts] == ["hello one", "你好一", "hello three"]
    assert all("reference_audio" in e and "audio" not in e for e in tts)
    (vc,), _ = synth(corpus, corpus, "vc")
    assert vc["language"] == "zh" and vc["target_audio"] == "clips/c1.wav"
    assert vc["examples"][0]["input_audio"] == "clips/c2.wav"

    out = tmp_path / "m" / "vc.jsonl"
    assert main(["eval", "manifest", "synth", str(corpus), "--suite", "vc", "--out", str(out)]) == 0
    items, errors = read_manifest(out, FieldSpec(required=("audio", "text", "language", "examples")))
    assert not errors and Path(items[0]["examples"][0]["output_audio"]).name == "c3.wav"
    out = tmp_path / "m" / "asr.jsonl"
    assert main(["eval", "manifest", "synth", str(corpus), "--suite", "asr", "--out", str(out)]) == 0
    assert "wrote 3 item(s)" in capsys.readouterr().err and not read_manifest(out, ASR)[1]
    assert main(["eval", "manifest", "synth", str(corpus), "--out", str(out)]) == 2
    assert "needs --suite" in capsys.readouterr().err
    assert main(["eval", "manifest", "synth", str(tmp_path), "--suite", "asr", "--out", str(out)]) == 2
    assert "data synth" in capsys.readouterr().err
    assert (
        main(["eval", "manifest", "synth", str(corpus), "--suite", "tts", "--count", "0", "--out", str(out)])
        == 2
    )
