/*
 * tapegrad: reverse-mode automatic differentiation in C.
 *
 * A program builds a computation from tensor ops; each op it runs with grad
 * mode on is appended to the context's tape, and tg_backward walks the tape
 * in reverse calling each op's vector-Jacobian product. A short tour
 * (y = sigmoid(W x + b), its gradients, and its graph):
 *
 *   tg_ctx *ctx = tg_ctx_new(42);
 *   tg_tensor *W = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "W");
 *   tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(2), "b");
 *   tg_assign_f64(ctx, W, (const double[]){0.1, -0.2, 0.3, 0.4, 0.5, -0.6});
 *   tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 3), (const double[]){1, 2, 3});
 *   tg_tensor *z = tg_linear(ctx, x, W, b);                  // x W^T + b
 *   tg_tensor *y = tg_sigmoid(ctx, z);
 *   tg_tensor *loss = tg_sum(ctx, y);
 *   if (tg_backward(ctx, loss) != TG_OK)                     // errors are sticky:
 *       fprintf(stderr, "%s\n", tg_errmsg(ctx));             // check once, at the end
 *   tg_print(stdout, W->grad, 6);                            // d loss / d W
 *   tg_dot_save(ctx, loss, "graph.dot", NULL);               // dot -Tsvg graph.dot
 *   tg_reset(ctx);                                           // end of step
 *   tg_ctx_free(ctx);
 *
 * Headers:
 *   tapegrad/core.h      context, allocator hook, errors, modes, RNG
 *   tapegrad/tensor.h    tensors and parameters
 *   tapegrad/op.h        the op registry; writing your own op
 *   tapegrad/ops.h       the built-in ops
 *   tapegrad/autograd.h  backward, zero_grad, gradcheck
 *   tapegrad/dot.h       Graphviz export
 *   tapegrad/safetensors.h  checkpoints in the safetensors format
 *   tapegrad/data.h      data sets (IDX files, as MNIST ships them), batches
 *   tapegrad/nn.h        sequential models, layers, losses, initialisers, model files
 *   tapegrad/optim.h     optimisers (SGD, Adam, AdamW), schedules, gradient clipping
 *   tapegrad/dist.h      data-parallel training over MPI: not included here (it needs
 *                        mpi.h); include it yourself and link tapegrad_mpi
 *
 * Ownership in one line: the context owns everything; step tensors die at
 * tg_reset, parameters at tg_param_free or tg_ctx_free.
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include "tapegrad/core.h"
#include "tapegrad/tensor.h"
#include "tapegrad/op.h"
#include "tapegrad/ops.h"
#include "tapegrad/autograd.h"
#include "tapegrad/dot.h"
#include "tapegrad/safetensors.h"
#include "tapegrad/data.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"

#endif
