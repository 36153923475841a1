/* tapegrad/safetensors.h: placeholder, filled in by the training layer's work. */
#ifndef TAPEGRAD_SAFETENSORS_H
#define TAPEGRAD_SAFETENSORS_H

#include "tensor.h"

#endif
