"""The model card: what a model may be used for and on whose data it was trained.

One typed object in the manifest (`Manifest.card`), written by `imagegen export` (which refuses a
model without one) and shown by the service (`/v1/models/{id}`, the playground's model card) and
by docs/quality.md. Every field is required and must say something: a card is whole or absent.
Manifests written before cards existed have none (`card: null`) and still load.

    license        the training data's licence as an SPDX expression (`CC-BY-SA-3.0`,
                   `CC-BY-4.0 AND Apache-2.0`): the terms the weights and images derived from
                   that data are shared under
    attribution    the credit that licence asks for, in the words to show beside an image
    training_data  what the model was trained on (dataset, split, image count, shape)
    intended_use   what the model is for
    limitations    what it does badly or must not be used for
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

CARD_FILE = "card.json"  # an image folder's own card (any of the fields), read by export
CARD_FIELDS = ("license", "attribution", "training_data", "intended_use", "limitations")


class ModelCard(BaseModel):
    """docs/design.md "Model repository", `card` (see the module docstring for each field)."""

    model_config = ConfigDict(extra="forbid")

    license: str
    attribution: str
    training_data: str
    intended_use: str
    limitations: str

    @field_validator(*CARD_FIELDS)
    @classmethod
    def _says_something(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank: a model card says what it means")
        return value
