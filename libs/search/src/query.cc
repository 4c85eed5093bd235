#include "medgrid/search/query.h"
