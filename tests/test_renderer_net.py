"""The renderer network: Table 7 size, eq. 6 shared encoder, eq. 8 blending, coefficient and reference paths,
checkpoints with dims, the VGG19 perceptual backbone."""
import pytest
import torch

from _renderer_synth import one_torch_thread

from realtalk_bridge.nets.renderer import (PatchDiscriminator, PerceptualLoss, Renderer, RendererDims,
                                           VGG19Features, count_params, load_renderer, load_vgg19, make_dims,
                                           save_renderer)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


def inputs(d, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = d.image_size
    src = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    ref = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    mask = torch.ones(b, 1, s, s)
    mask[..., s // 2:, s // 4: 3 * s // 4] = 0
    return src, mask, ref, torch.rand(b, d.n_coeffs, generator=g)


def test_paper_config_matches_table7_size():
    with torch.device("meta"):
        n = count_params(Renderer(make_dims("paper", n_id=14)))
    assert abs(n / 1e6 - 69.24) / 69.24 < 0.10, n
    with torch.device("meta"):
        assert count_params(Renderer(make_dims("lite"))) < 0.1 * n


def test_paper_layout():
    d = make_dims("paper")
    assert len(d.channels) == 4 and d.blocks == 2 and d.image_size == 256 and set(d.attn_scales) == {8, 16}
    with torch.device("meta"):
        m = Renderer(d)
    attn = [f.attention is not None for f in m.decoder]
    assert attn == [True, True, False, False, False]  # 1/16, 1/8 with cross-attention; 1/4, 1/2, 1/1 without


def test_output_keeps_source_outside_mask_and_changes_inside():
    torch.manual_seed(0)
    d = make_dims("tiny")
    m = Renderer(d).eval()
    src, mask, ref, c = inputs(d)
    with torch.no_grad():
        out = m(src, mask, ref, c)
    assert out.shape == src.shape
    keep = mask.expand_as(src) > 0
    assert torch.equal(out[keep], src[keep])  # eq. 8
    assert (out[~keep] - src[~keep]).abs().mean() > 0.05
    assert out.abs().max() <= 1


def test_coefficients_and_reference_drive_the_painted_region():
    torch.manual_seed(0)
    d = make_dims("tiny")
    m = Renderer(d).eval()
    for fia in m.decoder:  # AdaIN starts as identity (zero-initialised); give it a random modulation
        torch.nn.init.normal_(fia.adain.affine.weight, std=0.5)
    src, mask, ref, c = inputs(d)
    hole = (mask.expand_as(src) == 0)
    with torch.no_grad():
        base = m(src, mask, ref, c)
        other_c = m(src, mask, ref, torch.rand_like(c))
        other_ref = m(src, mask, torch.flip(ref, dims=[0]), c)
        masked_src = m(src * mask + (1 - mask) * 0.7, mask, ref, c)
    assert (base - other_c)[hole].abs().mean() > 1e-3
    assert (base - other_ref)[hole].abs().mean() > 1e-3
    # the network sees the source only through the mask: pixels under it cannot leak
    assert torch.allclose(base, masked_src, atol=1e-6)


def test_shared_encoder_runs_source_and_reference_as_one_batch():
    d = make_dims("tiny")
    m = Renderer(d).eval()
    seen = []
    m.encoder[0].register_forward_hook(lambda mod, i, o: seen.append(i[0].shape[0]))
    src, mask, ref, c = inputs(d, b=3)
    with torch.no_grad():
        m(src, mask, ref, c)
    assert seen == [6]


def test_checkpoint_roundtrip_keeps_dims(tmp_path):
    d = make_dims("tiny", n_id=5)
    m = Renderer(d).eval()
    path = tmp_path / "r.safetensors"
    save_renderer(path, m, {"step": 7})
    m2, meta = load_renderer(path)
    assert m2.dims == d and meta["step"] == "7"
    x = inputs(d)
    with torch.no_grad():
        assert torch.equal(m(*x), m2(*x))
    assert RendererDims.from_json(d.to_json()) == d


def test_bad_checkpoints_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read renderer checkpoint"):
        load_renderer(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a renderer checkpoint"):
        load_renderer(other)
    with pytest.raises(ValueError, match="unknown renderer config"):
        make_dims("huge")


def test_patch_discriminator_gives_a_logit_map():
    D = PatchDiscriminator(width=16)
    y = D(torch.zeros(2, 3, 64, 64))
    assert y.shape[0] == 2 and y.shape[1] == 1 and y.shape[2] > 1


def test_vgg19_weights_load_by_torchvision_names(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGG19Features().state_dict().items() if k.startswith("features.")}
    state = {k: torch.randn(s) * 0.05 for k, s in shapes.items()}
    path = tmp_path / "vgg19.safetensors"
    save_file(state, str(path))
    vgg = load_vgg19(path)
    assert all(torch.equal(v, state[k]) for k, v in vgg.state_dict().items() if k.startswith("features."))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512] and feats[-1].shape[-1] == 2
    # the first tap is relu(conv(normalised x)) with the loaded weights
    h = ((x + 1) / 2 - vgg.mean) / vgg.std
    assert torch.allclose(feats[0], torch.relu(torch.nn.functional.conv2d(h, state["features.0.weight"],
                                                                          state["features.0.bias"], padding=1)))
    loss = PerceptualLoss(path)
    assert loss.kind == "vgg19"
    assert float(loss(x, x)) == 0.0 and float(loss(x, -x)) > 0
    save_file({k: v for k, v in state.items() if k != "features.28.weight"}, str(path))
    with pytest.raises(ValueError, match="lack 1 tensors"):
        load_vgg19(path)


def test_perceptual_fallback_without_weights():
    loss = PerceptualLoss(None)
    assert loss.kind.startswith("fallback")
    x = torch.rand(1, 3, 32, 32)
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, x.flip(-1))) > float(loss(x, x + 0.01))
