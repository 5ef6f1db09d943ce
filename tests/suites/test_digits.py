"""The procedurally drawn digits: deterministic per seed and split, each image shows its label's glyph
(read back from the pixels by geometry worked out here), and a simple classifier finds the labels."""

import pytest
import torch

from hope.suites import digits


def test_same_arguments_same_images_and_each_split_its_own_stream():
    x, y = digits.generate(64, 3)
    x2, y2 = digits.generate(64, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    assert not torch.equal(x, digits.generate(64, 4)[0])
    assert not torch.equal(x, digits.generate(64, 3, split="test")[0])
    assert torch.bincount(y, minlength=10).tolist() == [7] * 4 + [6] * 6  # classes in equal turns


def test_an_upright_noiseless_image_shows_its_glyph_at_the_cell_centres():
    """Without augmentation the glyph is centred, 0.7 of the canvas tall and 5/7 as wide; the pixel
    nearest each of its 5 x 7 cell centres, thresholded, is the label's bitmap (clutter pixels, which
    are exactly 1, are left out)."""
    size = 32
    x, y = digits.generate(50, 0, size=size, noise=0.0, augment=False)
    height, width = 0.7, 0.7 * 5 / 7

    def pixel(v: float) -> int:  # normalised coordinate -> nearest pixel index (align_corners=False)
        return round(((v + 1) * size - 1) / 2)

    rows = [pixel(height * ((2 * r + 1) / 7 - 1)) for r in range(7)]
    cols = [pixel(width * ((2 * c + 1) / 5 - 1)) for c in range(5)]
    for image, label in zip(x[:, 0], y.tolist()):
        sampled = image[rows][:, cols]
        bitmap = torch.tensor([[ch == "#" for ch in row] for row in digits.GLYPHS[label]])
        clean = sampled < 1.0
        lo, hi = sampled[clean].min(), sampled[clean].max()
        assert torch.equal((sampled > (lo + hi) / 2)[clean], bitmap[clean]), label


def test_a_nearest_class_mean_classifier_fit_on_train_finds_the_test_labels():
    """Learnable: class means of the training images classify upright test images almost perfectly,
    and augmented ones far above chance (0.1) but not perfectly, so a model has something to learn."""
    for augment, lo, hi in ((False, 0.97, 1.0), (True, 0.3, 0.9)):
        x, y = digits.generate(2000, 0, augment=augment)
        means = torch.stack([x[y == c].mean(0).flatten() for c in range(10)])
        xt, yt = digits.generate(500, 0, split="test", augment=augment)
        predicted = torch.cdist(xt.flatten(1), means).argmin(1)
        assert lo <= (predicted == yt).float().mean() <= hi, augment


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split": "dev"}, r"split must be one of \['train', 'val', 'test'\], got 'dev'"),
        ({"size": 4}, "size must be an integer >= 8, got 4"),
        ({"noise": 2.0}, "noise must be a finite number >= 0 and <= 1, got 2.0"),
        ({"augment": "yes"}, r"augment must be one of \[False, True\], got 'yes'"),
    ],
)
def test_bad_input_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        digits.generate(4, 0, **changes)
