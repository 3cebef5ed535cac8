"""The ctc_compress projector: greedy CTC runs become one audio token each, independent of the batch."""

import torch
import torch.nn.functional as F

from speechllm.projector import CTCCompressProjector, ProjectorConfig

V = 5  # vocabulary; the blank is id 5
B = V


def _projector(seed=0, in_dim=8):
    torch.manual_seed(seed)
    return CTCCompressProjector(ProjectorConfig(kind="ctc_compress", in_dim=in_dim, out_dim=6, hidden_dim=16,
                                                vocab_size=V))


def _logits(labels):
    return F.one_hot(torch.as_tensor(labels), V + 1).float() * 12.0


def test_runs_follow_the_ctc_collapse():
    # a repeated label joined by frames is one run; the same label after a blank is a new run;
    # frames past the clip's length are ignored; an all-blank clip keeps one frame
    logits = _logits([[B, 1, 1, B, 1, 2, 2, B, 3, 0, 0, 4, 4],
                      [B, B, B, B, 2, B, B, B, B, B, B, 3, 3],
                      [B, B, B, B, B, B, B, B, B, B, B, B, B]])
    lengths = torch.tensor([11, 9, 13])
    seg, n = CTCCompressProjector.segments(logits, lengths)
    assert n.tolist() == [5, 1, 1]
    assert seg[0].tolist() == [-1, 0, 0, -1, 1, 2, 2, -1, 3, 4, 4, -1, -1]
    assert seg[1].tolist() == [-1] * 4 + [0] + [-1] * 8
    assert (seg[2] >= 0).sum() == 1


def test_audio_token_is_the_runs_word_posterior_times_the_table_plus_mlp():
    p = _projector(in_dim=V + 1)
    torch.nn.init.normal_(p.mlp[2].weight)  # the residual is zero-initialised: make it count here
    with torch.no_grad():  # an identity CTC head: the encoder states are the logits
        p.ctc_head.weight.copy_(torch.eye(V + 1))
        p.ctc_head.bias.zero_()
    table = torch.randn(V, 6)
    logits = _logits([[1, 1, B, 3]]) * 0.2  # soft posteriors: every class keeps some mass
    h = logits
    emb, n, out_logits = p(h, torch.tensor([4]), table)
    torch.testing.assert_close(out_logits, logits)
    assert n.tolist() == [2] and emb.shape == (1, 2, 6)
    probs = logits.softmax(-1)[0]
    run0 = probs[:2, :V].sum(0)
    run0 = run0 / run0.sum()
    expected0 = run0 @ table + p.mlp(h[0, :2].mean(0))
    run1 = probs[3, :V] / probs[3, :V].sum()
    expected1 = run1 @ table + p.mlp(h[0, 3])
    torch.testing.assert_close(emb[0], torch.stack([expected0, expected1]))


def test_batch_equals_one_by_one_and_gradients_reach_the_head():
    p = _projector(1)
    torch.nn.init.normal_(p.mlp[2].weight)
    table = torch.randn(V, 6)
    h = torch.randn(3, 20, 8, requires_grad=True)
    lengths = torch.tensor([20, 7, 13])
    emb, n, _ = p(h, lengths, table)
    for i in range(3):
        one, m, _ = p(h[i:i + 1, : lengths[i]], lengths[i:i + 1], table)
        assert m.item() == n[i].item()
        torch.testing.assert_close(emb[i, : n[i]], one[0])
        assert torch.all(emb[i, n[i]:] == 0)
    emb.sum().backward()
    assert p.ctc_head.weight.grad.abs().sum() > 0 and h.grad.abs().sum() > 0
