"""Face models (linear 3DMMs), the ARKit-52 space and retargeting to rigs."""
