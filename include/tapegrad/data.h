/* tapegrad/data.h: placeholder, filled in by the training layer's work. */
#ifndef TAPEGRAD_DATA_H
#define TAPEGRAD_DATA_H

#include "tensor.h"

#endif
