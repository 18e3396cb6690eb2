"""The OpenAI Images API, spoken by the official `openai` SDK to a live server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.service.conftest import Server, repository_of, serving


@pytest.fixture(scope="module")
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_generate_a_class_named_in_words(sdk: openai.OpenAI, client: httpx.Client) -> None:
    result = sdk.images.generate(model="gan-fashion", prompt="a bag", n=2, extra_body={"seed": 7})
    assert len(result.data) == 2
    assert result.data[0].revised_prompt == "Bag"
    first = _png(result.data[0].b64_json or "")
    assert first.shape == (28, 28)
    # The same pixels as the native API's seed 7, class Bag.
    native = client.get("/sample", params={"model": "gan-fashion", "seed": 7, "class": "Bag"})
    assert np.array_equal(first, np.asarray(Image.open(io.BytesIO(native.content))))


@pytest.mark.parametrize(
    ("model", "prompt", "expected"),
    [
        ("gan-mnist", "three", "3"),
        ("gan-mnist", "The digit 7", "7"),
        ("gan-fashion", "Ankle boot", "Ankle boot"),
        ("gan-fashion", "a pair of jeans", "Trouser"),
        ("gan-emoji", "a smiling face", "smileys-emotion"),
    ],
)
def test_natural_prompts(sdk: openai.OpenAI, model: str, prompt: str, expected: str) -> None:
    result = sdk.images.generate(model=model, prompt=prompt, extra_body={"seed": 1})
    assert result.data[0].revised_prompt == expected


def test_a_family_and_an_unconditional_model(sdk: openai.OpenAI) -> None:
    result = sdk.images.generate(model="gan", prompt="5", extra_body={"dataset": "mnist", "seed": 3})
    assert result.data[0].revised_prompt == "5"
    free = sdk.images.generate(model="vae-mnist-seed", prompt="anything at all")
    assert _png(free.data[0].b64_json or "").shape == (28, 28)


def test_size_is_a_multiple_of_the_model(sdk: openai.OpenAI) -> None:
    result = sdk.images.generate(model="gan-mnist", prompt="1", size="112x112")  # type: ignore[arg-type]
    image = _png(result.data[0].b64_json or "")
    assert image.shape == (112, 112)
    assert np.array_equal(image[::4, ::4], image[1::4, 1::4])  # nearest-neighbour blocks


def test_url_is_the_deterministic_sample_link(sdk: openai.OpenAI, client: httpx.Client) -> None:
    result = sdk.images.generate(
        model="gan-mnist", prompt="four", response_format="url", extra_body={"seed": 42}
    )
    url = result.data[0].url or ""
    assert "/sample?" in url and "seed=42" in url
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    again = sdk.images.generate(
        model="gan-mnist", prompt="four", response_format="url", extra_body={"seed": 42}
    )
    assert again.data[0].url == url


def test_models_list(sdk: openai.OpenAI) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert {"gan-mnist", "gan-fashion"} <= ids


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"model": "gan-fashion", "prompt": "a spaceship"}, openai.BadRequestError, "Ankle boot"),
        ({"model": "no-such-model", "prompt": "3"}, openai.NotFoundError, "no-such-model"),
        ({"model": "gan-mnist", "prompt": "3", "n": 100_000}, openai.BadRequestError, "n must be"),
        ({"model": "gan-mnist", "prompt": "3", "size": "100x100"}, openai.BadRequestError, "28x28"),
        ({"model": "gan-mnist", "prompt": "3", "size": "28x56"}, openai.BadRequestError, "multiple"),
        ({"model": "gan-mnist", "prompt": "3", "n": 0}, openai.BadRequestError, "schema"),
    ],
)
def test_errors_are_the_sdks_own(sdk: openai.OpenAI, kwargs: dict, error: type, says: str) -> None:
    with pytest.raises(error) as raised:
        sdk.images.generate(**kwargs)
    assert says in str(raised.value)
    body = raised.value.body  # type: ignore[attr-defined]
    assert body["type"] == "invalid_request_error" and "message" in body


@pytest.fixture(scope="module")
def keyed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    repo = repository_of(models_dir, tmp_path_factory, "openai-repo", "gan-mnist")
    with serving(repo, tmp_path_factory.mktemp("openai-keyed"), env={"IMAGEGEN_API_KEY": "sk-test"}) as srv:
        yield srv


def test_the_api_key_is_the_bearer_token(keyed: Server) -> None:
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-test", max_retries=0)
    assert good.images.generate(model="gan-mnist", prompt="2").data[0].revised_prompt == "2"
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(model="gan-mnist", prompt="2")


def test_the_readme_openai_example_runs_as_written(server: Server) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python")[1:]]
    code = next(b for b in blocks if "from openai import OpenAI" in b)
    code = code.replace("http://127.0.0.1:8000", server.url)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    image = _png(scope["png_base64"])
    assert image.shape[:2] == (112, 112)  # 4x gan-fashion's 28x28, as size asked
