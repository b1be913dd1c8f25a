"""`dualbench predict`: classify one image with the task's real preprocessing.

The image is read with Pillow, converted to the task's channels, resized to its input size and
normalised exactly as the training data was. The seeds' `1 - im/255` inversion is NOT applied
(their training data was never inverted); `--invert` exists for dark-on-light photos only.
"""
from pathlib import Path

import numpy as np

from dualbench import backends
from dualbench.common.data.split import normalize
from dualbench.common.errors import DataError, UserError
from dualbench.common.tasks import get_task

SUFFIX_BACKEND = {".pt": "torch", ".pdparams": "paddle"}


def load_image(path, shape, invert=False):
    """Image file -> uint8 1 x C x H x W (grayscale for 1 channel, RGB for 3)."""
    from PIL import Image, UnidentifiedImageError
    c, h, w = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            array = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    array = array[None] if c == 1 else array.transpose(2, 0, 1)
    if invert:
        array = 255 - array
    return array[None]


def predict_image(task_name, checkpoint, image, backend_name=None, invert=False, device="cpu"):
    task = get_task(task_name)
    checkpoint = Path(checkpoint)
    if backend_name is None:
        backend_name = SUFFIX_BACKEND.get(checkpoint.suffix)
        if backend_name is None:
            raise UserError(f"{checkpoint}: cannot tell the backend from the suffix (.pt or .pdparams); pass --backend")
    if not checkpoint.is_file():
        raise DataError(checkpoint, "does not exist")
    backend = backends.load(backend_name)
    dev, _ = backend.device.configure(1, device)
    model = backend.models.build_model(task.model)
    backend.weights.load_checkpoint(model, checkpoint)
    x = normalize(load_image(image, task.model.input_shape, invert), *task.data.normalize)
    classes, outputs = backend.train.predict(model, x, task.num_classes, dev)
    out = outputs[0]
    if out.shape[0] == 1:
        print(f"{image}: class {int(classes[0])} (regressed value {float(out[0]):.3f})")
        return int(classes[0])
    probs = out if task.loss == "mse_onehot" else np.exp(out - out.max()) / np.exp(out - out.max()).sum()
    top = np.argsort(probs)[::-1][:3]
    print(f"{image}: class {int(classes[0])} (p={probs[top[0]]:.3f}; top-3 "
          + ", ".join(f"{int(k)}:{probs[k]:.3f}" for k in top) + ")")
    return int(classes[0])
