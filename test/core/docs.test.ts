import { testDocExamples } from '../helpers/doc-examples.ts';

testDocExamples('docs/core.md', 10);
