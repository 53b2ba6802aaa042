import { testDocExamples } from '../helpers/doc-examples.ts';

testDocExamples('docs/testing.md', 2);
