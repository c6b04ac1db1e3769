"""A model name is a local folder or a Hugging Face hub id by one rule (``files.looks_local``),
and a name that is neither is one line before anything loads: no such folder, not in the cache
while offline (no request), not on the hub, or a hub that cannot be reached (one request, no
retries). No test here touches the network: the hub's answers are stand-ins."""

from __future__ import annotations

import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from fedmllm.errors import ModelError
from fedmllm.files import local_model_problem, looks_local
from fedmllm.model.loading import HUB_TIMEOUT, hub_model_problem, load_vlm


@pytest.mark.parametrize("name", ["./m", "../m", "/abs/m", "~/m", ".hidden", "a/b/c",
                                  "models\\m", "org/name/"])
def test_a_name_written_as_a_path_is_local(name):
    assert looks_local(name)


def test_a_hub_id_is_local_only_when_its_first_component_or_itself_is_here(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("models/qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "gpt2"):
        assert not looks_local(name) and local_model_problem(name) is None
    (tmp_path / "models").mkdir()  # the docs' example once models/ exists: a folder in it
    assert looks_local("models/qwen2-vl-2b")
    assert local_model_problem("models/qwen2-vl-2b") == "no such model folder"
    (tmp_path / "models" / "qwen2-vl-2b").mkdir()
    assert local_model_problem("models/qwen2-vl-2b") == "not a model folder (no config.json)"
    (tmp_path / "gpt2").write_text("x")
    assert looks_local("gpt2") and local_model_problem("gpt2") == "no such model folder"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache in ``tmp_path``, offline mode as set, and the hub's answer
    to ``model_info`` (``hub.answer``: an exception to raise, or ``None``) with its calls."""

    class Hub:
        def __init__(self) -> None:
            self.answer: BaseException | None = None
            self.calls: list = []

        def offline(self, value: bool) -> None:
            monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: value)

    h = Hub()

    def model_info(self, repo_id, **kwargs):
        h.calls.append((repo_id, kwargs))
        if h.answer is not None:
            raise h.answer

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    h.offline(False)
    return h


def _hub_error(cls: type[Exception]) -> Exception:
    """An instance of one of huggingface_hub's HTTP errors without an HTTP response (only its
    class is read)."""
    e = cls.__new__(cls)
    Exception.__init__(e, "404 Client Error")
    return e


def _cache(root, repo: str) -> None:
    """``repo``'s config.json in a Hugging Face cache at ``root`` (its layout: refs/main names
    the snapshot)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").write_text("{}")


def test_offline_a_hub_id_not_in_the_cache_is_refused_without_a_request(hub, tmp_path):
    hub.offline(True)
    problem = hub_model_problem("someorg/somemodel")
    assert problem.startswith("no such model folder, and not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in problem and hub.calls == []
    _cache(tmp_path / "hub", "someorg/somemodel")
    assert hub_model_problem("someorg/somemodel") is None


def test_online_the_hub_is_asked_once_whether_it_holds_the_model(hub, tmp_path):
    assert hub_model_problem("someorg/there") is None
    assert hub.calls == [("someorg/there", {"timeout": HUB_TIMEOUT})]
    hub.answer = _hub_error(RepositoryNotFoundError)
    assert hub_model_problem("models/qwen2-vl-2b") == (
        "no such model folder, and no such model on the Hugging Face hub (a private one needs "
        "`hf auth login`)")
    hub.answer = _hub_error(GatedRepoError)  # it exists; the download says what access it needs
    assert hub_model_problem("someorg/gated") is None
    hub.answer = ConnectionError("[Errno -2] Name or service not known\nmore")
    assert hub_model_problem("someorg/somemodel") == (
        "no such model folder, not in the Hugging Face cache, and the hub cannot be reached "
        "([Errno -2] Name or service not known)")
    assert len(hub.calls) == 4  # one request each, no retries
    _cache(tmp_path / "hub", "someorg/cached")
    assert hub_model_problem("someorg/cached") is None and len(hub.calls) == 4


def test_a_name_that_is_neither_a_folder_nor_a_hub_id(hub):
    assert hub_model_problem("my model") == ("no such model folder, and not a Hugging Face "
                                             "hub id (name or org/name)")
    assert hub_model_problem("./x") is None and hub.calls == []  # local: not the hub's


def test_load_vlm_refuses_an_uncached_hub_id_offline_in_one_line(hub):
    hub.offline(True)
    with pytest.raises(ModelError, match="someorg/somemodel: no such model folder, and not in "
                                         "the Hugging Face cache") as e:
        load_vlm("someorg/somemodel")
    assert "\n" not in str(e.value) and hub.calls == []
