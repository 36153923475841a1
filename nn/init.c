/* init.c: placeholder, filled in by the training layer's work. */
#include "tapegrad.h"
