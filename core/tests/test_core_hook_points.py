import pytest
import torch

from bridge import HookPoint, HookShapeError


def test_identity_without_hooks_and_replacement_with():
    point = HookPoint()
    x = torch.randn(2, 3)
    assert point(x) is x
    point.add_hook(lambda t, hook: t * 2)
    torch.testing.assert_close(point(x), x * 2)


def test_wrong_shape_names_hook_and_both_shapes():
    point = HookPoint()
    point.name = "blocks.0.hook_resid_pre"

    def squash(t, hook):
        return t[:, :1]

    point.add_hook(squash)
    with pytest.raises(HookShapeError) as err:
        point(torch.randn(2, 3))
    message = str(err.value)
    assert "squash" in message and "blocks.0.hook_resid_pre" in message
    assert "(2, 1)" in message and "(2, 3)" in message


def test_listeners_fire_on_first_and_last_hook_only():
    point = HookPoint()
    changes = []
    point.on_change(lambda: changes.append(point.active))
    first = point.add_hook(lambda t, hook: None)
    second = point.add_hook(lambda t, hook: None, dir="bwd")
    first.remove()
    second.remove()
    assert changes == [True, False]


def test_backward_hook_sees_gradient_and_can_replace_it():
    point = HookPoint()
    seen = {}
    point.add_hook(lambda g, hook: seen.setdefault("g", g) * 0 + 1.0, dir="bwd")
    x = torch.randn(3, requires_grad=True)
    (point(x * 1.0) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(seen["g"], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(x.grad, torch.ones(3))


def test_remove_hooks_keeps_permanent_unless_asked():
    point = HookPoint()
    point.add_hook(lambda t, hook: None, is_permanent=True)
    point.add_hook(lambda t, hook: None)
    point.remove_hooks()
    assert len(point.fwd_hooks) == 1
    point.remove_hooks(including_permanent=True)
    assert not point.active


def test_a_returned_tensor_on_another_device_is_moved_where_outputs_move_and_refused_elsewhere():
    """On a model accelerate spreads over devices (``move_outputs``), a hook's tensor goes to the activation's
    device; elsewhere a tensor on another device is refused, naming both. The ``meta`` device stands in for a
    second device on a machine with one."""
    from bridge.kernel.errors import HookOutputError

    point = HookPoint()
    point.name = "blocks.0.hook_resid_post"
    activation = torch.empty(2, 3, 4, device="meta")
    handle = point.add_hook(lambda t, hook: torch.zeros(2, 3, 4))  # made on the CPU
    with pytest.raises(HookOutputError, match=r"returned a tensor on cpu, but the activation is on meta"):
        point(activation)
    point.move_outputs = True
    moved = point(activation)
    assert moved.device.type == "meta" and moved.shape == (2, 3, 4)
    handle.remove()
