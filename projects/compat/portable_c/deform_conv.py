"""Placeholder: being written."""
def _todo(*a, **k):
    raise NotImplementedError
deform_conv_forward = deform_conv_backward_input = deform_conv_backward_filter = _todo
modulated_deform_conv_forward = modulated_deform_conv_backward = _todo
