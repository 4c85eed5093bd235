#include "medgrid/core/request_context.h"

namespace medgrid::core {

RequestContext& CurrentRequest() {
  thread_local RequestContext context;
  return context;
}

}  // namespace medgrid::core
