"""Constants with LLaVA-NeXT's names and values (``from llava.constants import IMAGE_TOKEN_INDEX``)."""

CONTROLLER_HEART_BEAT_EXPIRATION = 30
WORKER_HEART_BEAT_INTERVAL = 15

LOGDIR = "."

# Model Constants
#: Label value ignored by the loss (system/user tokens and visual positions).
IGNORE_INDEX = -100
#: Placeholder id that ``tokenizer_image_token`` puts where ``<image>`` was; the model splices visual embeddings there.
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
