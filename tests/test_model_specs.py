"""timm:NAME and hf:FOLDER specs, modules passed in, checkpoints of both, fixed-size models.

Every model is built from a tiny config (a few blocks, small widths): nothing is
downloaded and each forward pass takes milliseconds.
"""

from __future__ import annotations

import sys

import pytest
import timm
import torch
import transformers
from PIL import Image

import fvis
from fvis import objectives as O
from fvis.cli import main as cli
from fvis.models import info, load_model, save
from fvis.outputs import OutputView
from fvis.param import for_input

torch.set_num_threads(1)

TINY_VIT = dict(depth=2, img_size=32, patch_size=8, embed_dim=32, num_heads=2)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- timm ---------------------------------------------------------------------------


def test_timm_spec_reads_pretrained_cfg():
    model = load_model("timm:resnet18", weights=None)
    meta = model.fvis_info
    cfg = timm.models.get_pretrained_cfg("resnet18")
    assert (meta.input_size, meta.mean, meta.std) == (cfg.input_size, cfg.mean, cfg.std)
    assert meta.labels[:2] == ("tench", "goldfish") and len(meta.labels) == 1000
    assert meta.name == "timm:resnet18" and not meta.fixed_size
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # random init is seeded: the same spec gives the same model again
    assert _same_weights(model, load_model("timm:resnet18", weights=None))


def test_timm_vit_is_fixed_size_at_its_img_size():
    vit = load_model("timm:vit_tiny_patch16_224", weights=None, **TINY_VIT)
    assert vit.fvis_info.input_size == (3, 32, 32) and vit.fvis_info.fixed_size
    assert vit.fvis_info.mean == (0.5, 0.5, 0.5)  # the ViT's pretrained_cfg, not ImageNet's
    with pytest.raises(AssertionError):  # why render must fit the image back
        vit(torch.zeros(1, 3, 40, 40))


def test_timm_weights_file_and_offline_error(tmp_path):
    src = timm.create_model("resnet18", num_classes=7)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = load_model("timm:resnet18", weights=str(path), num_classes=7)
    assert _same_weights(model, src)
    with pytest.raises(FileNotFoundError, match=r"not on this machine.*weights=None"):
        load_model("timm:resnet18")  # DEFAULT: no cached weights here, nothing downloaded
    with pytest.raises(ValueError, match="Nearest: resnet18"):
        load_model("timm:resnet181", weights=None)


def test_timm_module_passed_in_and_checkpoint(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", **TINY_VIT, num_classes=5)
    assert vit.training
    model = load_model(vit)
    assert model is vit and not model.training
    assert model.fvis_info.input_size == (3, 32, 32) and model.fvis_info.fixed_size
    assert model.fvis_info.labels is None  # 5 classes: no ImageNet table fits
    # a model loaded by spec remembers its constructor arguments for save()
    spec_vit = load_model("timm:vit_tiny_patch16_224", weights=None, **TINY_VIT, num_classes=5)
    save(spec_vit, tmp_path / "vit.pt")
    ckpt = torch.load(tmp_path / "vit.pt", weights_only=True)
    assert ckpt["spec"] == "timm:vit_tiny_patch16_224" and ckpt["kwargs"]["depth"] == 2
    back = load_model(str(tmp_path / "vit.pt"))
    assert _same_weights(back, spec_vit) and back.fvis_info == spec_vit.fvis_info
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), spec_vit(x))


def test_missing_library_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"pip install 'fvis\[timm\]'"):
        load_model("timm:resnet18", weights=None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'fvis\[hf\]'"):
        load_model("hf:/nowhere", weights=None)


# --- Hugging Face ---------------------------------------------------------------------


def _hf_vit():
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "fox"},
        label2id={"cat": 0, "dog": 1, "fox": 2},
    )
    torch.manual_seed(1)
    return transformers.ViTForImageClassification(config).eval()


def _hf_resnet():
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4
    )
    torch.manual_seed(2)
    return transformers.ResNetForImageClassification(config).eval()


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    vit, resnet = _hf_vit(), _hf_resnet()
    vit.save_pretrained(root / "vit")
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
    ).save_pretrained(root / "vit")
    resnet.save_pretrained(root / "resnet")
    return {"vit": (root / "vit", vit), "resnet": (root / "resnet", resnet)}


def test_hf_folder_gives_logits_and_config(hf_folders):
    folder, hf = hf_folders["vit"]
    model = load_model(f"hf:{folder}")
    x = torch.randn(2, 3, 32, 32)
    assert isinstance(model, OutputView)
    assert torch.equal(model(x), hf(pixel_values=x).logits)  # the logits, one tensor
    meta = model.fvis_info
    assert meta.input_size == (3, 32, 32) and meta.fixed_size  # ViT refuses other sizes
    assert (meta.mean, meta.std) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    assert meta.labels == ("cat", "dog", "fox")
    # layer names and state dict are those of the transformers model
    assert [n for n, _ in model.named_modules()][1:] == [n for n, _ in hf.named_modules()][1:]
    assert _same_weights(model, hf)
    assert {"vit.embeddings.patch_embeddings.projection", "vit.layernorm", "classifier"} <= {
        li.name for li in fvis.layers(model)
    }
    assert model.config.num_labels == 3  # other attributes read through the view
    # weights=None: the folder's config, seeded random weights
    fresh = load_model(f"hf:{folder}", weights=None)
    assert not _same_weights(fresh, hf)
    assert _same_weights(fresh, load_model(f"hf:{folder}", weights=None))


def test_hf_resnet_without_processor_config(hf_folders):
    folder, hf = hf_folders["resnet"]
    with pytest.warns(UserWarning, match="no preprocessor_config.json.*unnormalized"):
        model = load_model(f"hf:{folder}")
    meta = model.fvis_info
    assert not meta.fixed_size and meta.input_size == (3, 224, 224)
    assert meta.mean is None and meta.labels is None  # LABEL_0.. placeholders are no labels
    x = torch.randn(1, 3, 40, 40)
    assert torch.equal(model(x), hf(pixel_values=x).logits)


def test_hf_module_passed_in_and_checkpoint(hf_folders, tmp_path):
    hf = _hf_vit().train()
    model = load_model(hf)
    assert isinstance(model, OutputView) and not hf.training
    assert load_model(model) is model  # a view is not wrapped again
    assert model.fvis_info.labels == ("cat", "dog", "fox") and model.fvis_info.fixed_size
    save(model, tmp_path / "vit.pt")
    ckpt = torch.load(tmp_path / "vit.pt", weights_only=True)  # config as plain data
    assert ckpt["hf_config"]["hidden_size"] == 32
    back = load_model(str(tmp_path / "vit.pt"))
    x = torch.randn(1, 3, 32, 32)
    assert _same_weights(back, hf) and torch.equal(back(x), hf(pixel_values=x).logits)
    assert back.fvis_info.labels == ("cat", "dog", "fox")


def test_hf_name_not_on_this_machine():
    with pytest.raises(FileNotFoundError, match="neither a folder nor in the Hugging Face cache"):
        load_model("hf:nobody/no-such-model-here")


def test_hf_attribution_and_render(hf_folders):
    folder, hf = hf_folders["vit"]
    model = load_model(f"hf:{folder}")
    from fvis.attribution import Gradient

    x = torch.randn(2, 3, 32, 32)
    g = Gradient(model).attribute(x, target="dog")
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(hf(pixel_values=xg).logits[:, 1].sum(), xg)
    torch.testing.assert_close(g, ref)
    result = fvis.render(model, O.class_logit("fox"), steps=2, progress=False)
    assert result.images.shape == (1, 3, 32, 32)


# --- fixed-size models render with the standard recipe ---------------------------------


def test_torchvision_vit_renders_with_standard_transforms():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    model = load_model(vit)
    assert model.fvis_info.fixed_size and model.fvis_info.input_size == (3, 32, 32)
    result = fvis.render(model, O.class_logit(1), steps=3, progress=False)
    assert result.images.shape == (1, 3, 32, 32)
    assert result.history[-1].item() > result.history[0].item()
    with pytest.raises(AssertionError):  # without fitting back: the transformed image fails
        fvis.render(model, O.class_logit(1), steps=1, size=None, progress=False)


def test_timm_vit_renders_with_standard_transforms():
    vit = load_model("timm:vit_tiny_patch16_224", weights=None, **TINY_VIT)
    result = fvis.render(vit, O.class_logit(7), steps=3, progress=False)
    assert result.images.shape == (1, 3, 32, 32) and torch.isfinite(result.history).all()


def test_cli_render_timm_matches_python(tmp_path):
    out = tmp_path / "cli.png"
    argv = ["render", "--model", "timm:resnet18", "--weights", "none", "--class", "3"]
    argv += ["--steps", "3", "--size", "48", "--seed", "5", "-q", "-o", str(out)]
    assert cli(argv) == 0
    model = load_model("timm:resnet18", weights=None)
    result = fvis.render(
        model,
        O.one_per_item([O.class_logit(3)]),
        for_input((3, 48, 48), 1, seed=5),
        steps=3,
        seed=5,
        redirected_relu_steps=16,
        progress=False,
    )
    python = result.grid(scale=128 // 48)
    cli_image = Image.open(out)
    assert cli_image.size == python.size
    assert cli_image.tobytes() == python.convert(cli_image.mode).tobytes()
    assert info(model).labels[3] == "tiger shark"


def test_gallery_and_cli_take_the_new_specs(tmp_path, hf_folders, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "gallery" / "build.py"
    spec = importlib.util.spec_from_file_location("gallery_build_specs", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    # a fixed-size timm ViT, through its checkpoint (spec and constructor arguments inside)
    vit = load_model("timm:vit_tiny_patch16_224", weights=None, **TINY_VIT)
    save(vit, tmp_path / "vit.pt")
    argv = ["--model", str(tmp_path / "vit.pt"), "--layers", "patch_embed.proj"]
    argv += ["--max-channels", "2", "--batch", "2", "--steps", "2", "--device", "cpu", "-q"]
    assert build.main([*argv, "-o", str(tmp_path / "site")]) == 0
    assert len(list((tmp_path / "site").rglob("positive.png"))) == 2
    folder, _ = hf_folders["resnet"]
    assert cli(["layers", "--model", f"hf:{folder}", "--size", "64"]) == 0
    assert "resnet.encoder.stages.1" in capsys.readouterr().out


def test_cli_says_which_extra_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert cli(["layers", "--model", "timm:resnet18", "--weights", "none"]) == 2
    assert "pip install 'fvis[timm]'" in capsys.readouterr().err


def test_cli_render_of_fixed_size_and_segmentation_models(tmp_path, capsys):
    vit = load_model("timm:vit_tiny_patch16_224", weights=None, **TINY_VIT)
    save(vit, tmp_path / "vit.pt")
    common = ["--class", "1", "--steps", "1", "--size", "24", "-q"]
    # a 24 px image for a 32 px-only ViT: fitted back, in the render and in the report
    assert (
        cli(["render", "--model", str(tmp_path / "vit.pt"), *common, "-o", str(tmp_path / "v.png")])
        == 0
    )
    seg = ["render", "--model", "torchvision:lraspp_mobilenet_v3_large", "--weights", "none"]
    assert cli([*seg, *common, "-o", str(tmp_path / "s.png")]) == 0  # dict output, mean p
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "p(class " in ln]
    assert len(lines) == 2
